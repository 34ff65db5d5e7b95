"""What lets training survive a kill on either engine: files flushed to disk, the random streams, and SIGTERM turned
into "save, then stop". Each engine writes its own checkpoint format with these (reisoseg.nnunet_v1.checkpoints,
reisoseg.nnunet_v2.em_training)."""
from __future__ import annotations

import contextlib
import os
import random
import signal
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

DEFAULT_CHECKPOINT_MINUTES = 5.0  # the latest checkpoint at an epoch's end once this long has passed since the last


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


def durable(path: Path) -> None:
    """Flush a written file to disk, so that a rename after it publishes complete data."""
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


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
