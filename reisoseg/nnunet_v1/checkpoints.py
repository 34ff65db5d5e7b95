"""Checkpoints that survive a kill: atomic files, the RNG state, and SIGTERM turned into "save, then stop".

nnU-Net v1 writes `model_latest` every 50 epochs, in place (`torch.save` onto the old file, then the `.pkl`), so a
kill loses up to 50 epochs and a kill during the write leaves a corrupt checkpoint. `EMTrainingMixin` uses the
pieces below instead: each `.model` and its `.model.pkl` is written to a hidden temporary sibling, flushed to disk
and renamed into place, so a reader sees either the previous file or the new one. The pair is renamed `.pkl` first:
a kill between the two renames leaves the new `.pkl` beside the previous `.model`, which is harmless because a run's
`.pkl` (trainer name, init arguments, plans) is the same at every save.
"""
from __future__ import annotations

import contextlib
import os
import pickle
import random
import signal
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from reisoseg.io.atomic import atomic_file

DEFAULT_CHECKPOINT_MINUTES = 5.0  # model_latest at an epoch's end once this long has passed since the last save


def rng_state(device: torch.device | None) -> dict[str, Any]:
    """The random streams of this process that training draws from: torch (PI module, initialisation), CUDA,
    numpy and Python (nnU-Net's patch sampling in the main process)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
                             "python": random.getstate()}
    if device is not None and device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any], rank: int | None = None) -> None:
    """Put back what `rng_state` saved. On rank `rank` of several, numpy and Python are then reseeded per rank from
    the restored stream (the checkpoint holds rank 0's), so ranks keep drawing different patches; torch's stream
    stays shared, as the PI module needs."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if rank is not None:
        seed = int(np.random.randint(2**31 - 1 - 1024)) + rank
        np.random.seed(seed)
        random.seed(seed)


def _durable(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def write_checkpoint(path: str | os.PathLike, state: dict[str, Any], info: dict[str, Any]) -> None:
    """Write `path` (torch.save of `state`) and `path.pkl` (pickle of `info`) atomically, as described above."""
    path = Path(path)
    with atomic_file(f"{path}.pkl") as temporary:
        with open(temporary, "wb") as handle:
            pickle.dump(info, handle)
        _durable(temporary)
    with atomic_file(path) as temporary:
        torch.save(state, temporary)
        _durable(temporary)


def remove_unfinished_writes(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of checkpoint writes that a kill interrupted (`.NAME.model.XXXX.model[.pkl]`)."""
    stale = [p for p in Path(folder).glob(".*.model*") if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class StopRequested:
    """Set by SIGTERM (a cluster's preemption signal) while training runs; the trainer checks it between
    iterations, saves and stops. A second SIGTERM is ignored, so a save in progress is not cut short."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequested]:
        """Handle SIGTERM inside the block (main thread only; elsewhere the default behaviour stays)."""
        try:
            previous = signal.signal(signal.SIGTERM, self._handle)
        except ValueError:  # not the main thread
            yield self
            return
        try:
            yield self
        finally:
            signal.signal(signal.SIGTERM, previous)
