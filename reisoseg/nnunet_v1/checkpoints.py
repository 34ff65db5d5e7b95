"""Checkpoints in nnU-Net v1's format that survive a kill: each file written atomically.

nnU-Net v1 writes `model_latest` every 50 epochs, in place (`torch.save` onto the old file, then the `.pkl`), so a
kill loses up to 50 epochs and a kill during the write leaves a corrupt checkpoint. `EMTrainingMixin` uses the
pieces below instead: each `.model` and its `.model.pkl` is written to a hidden temporary sibling, flushed to disk
and renamed into place, so a reader sees either the previous file or the new one. The pair is renamed `.pkl` first:
a kill between the two renames leaves the new `.pkl` beside the previous `.model`, which is harmless because a run's
`.pkl` (trainer name, init arguments, plans) is the same at every save.
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from reisoseg.checkpointing import durable
from reisoseg.io.atomic import atomic_file


def write_checkpoint(path: str | os.PathLike, state: dict[str, Any], info: dict[str, Any]) -> None:
    """Write `path` (torch.save of `state`) and `path.pkl` (pickle of `info`) atomically, as described above."""
    path = Path(path)
    with atomic_file(f"{path}.pkl") as temporary:
        with open(temporary, "wb") as handle:
            pickle.dump(info, handle)
        durable(temporary)
    with atomic_file(path) as temporary:
        torch.save(state, temporary)
        durable(temporary)


def remove_unfinished_writes(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a kill interrupted (`.NAME.model.XXXX.model[.pkl]`)."""
    stale = [p for p in Path(folder).glob(".*.model*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
