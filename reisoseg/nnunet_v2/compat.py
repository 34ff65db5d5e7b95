"""Every change to nnU-Net v2's behaviour (`nnunetv2==2.8.1`) lives here, applied only for the duration of one call
and undone on leaving; another nnunetv2 version is refused with one line rather than patched blindly.

1. v2's `nnUNetTrainer.load_checkpoint` reads a checkpoint file with `torch.load(weights_only=False)`, and its
   branch for an already loaded dict is broken in 2.8.1 (the dict is never bound). `checkpoints_read_safely()` gives
   that module, for the call, a `torch` whose `load` is reisoseg.safe_loading's weights-only loader.
"""
from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any

import torch

from reisoseg.errors import ReIsoSegError
from reisoseg.safe_loading import safe_load_checkpoint

SUPPORTED_VERSION = "2.8.1"  # the nnunetv2 release the change below was written against
TRAINER_MODULE = "nnunetv2.training.nnUNetTrainer.nnUNetTrainer"
_lock = threading.Lock()


def check_version() -> None:
    """ReIsoSegError unless the installed nnunetv2 is the release this module was written for."""
    installed = version("nnunetv2")
    if installed != SUPPORTED_VERSION:
        raise ReIsoSegError(f"nnunetv2 {installed} is installed, but reisoseg's nnU-Net v2 engine is written for "
                            f"nnunetv2=={SUPPORTED_VERSION}: pip install nnunetv2=={SUPPORTED_VERSION}")


class _TorchLoadingSafely:
    """torch, except that `load` reads weights only (whatever `weights_only` the caller passes)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    @staticmethod
    def load(path, map_location=None, weights_only=None, **kwargs) -> dict[str, Any]:
        return safe_load_checkpoint(path)


@contextmanager
def checkpoints_read_safely() -> Iterator[None]:
    """Within the block, v2's trainer module loads checkpoints through reisoseg.safe_loading."""
    check_version()
    module = sys.modules[TRAINER_MODULE]
    with _lock:
        module.torch = _TorchLoadingSafely()
        try:
            yield
        finally:
            module.torch = torch
