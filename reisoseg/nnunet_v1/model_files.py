"""Model files read without unrestricted pickle, whatever the environment says.

nnU-Net v1 reads each checkpoint's `.model.pkl` (and a model folder's `plans.pkl`) with plain pickle, and each
`.model` with a `torch.load` that does not say `weights_only`, which `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` (set by many
v1 users) turns into plain pickle too. Model folders may come from strangers, so every model file that we or nnU-Net
read on our behalf goes through here: pickles with an unpickler that only rebuilds containers, numbers and numpy
arrays, checkpoints with `torch.load(weights_only=True)` and an explicit list of the numpy globals nnU-Net stores.
"""
from __future__ import annotations

import io
import os
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

# (module, name) pairs a plans/checkpoint pickle legitimately needs; anything else is refused.
_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
}
_ALLOWED_MODULE_PREFIXES = ("numpy.dtypes",)  # dtype classes such as numpy.dtypes.Float64DType


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list (it could run code)."""


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_GLOBALS or module.startswith(_ALLOWED_MODULE_PREFIXES):
            return super().find_class(module, name)
        raise UnsafePickleError(f"refusing to load {module}.{name}: only plain data may be stored in model files")


def safe_load_pickle(path: str | os.PathLike, mode: str = "rb") -> Any:
    """Drop-in for batchgenerators' `load_pickle` that refuses any pickle able to run code."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except UnsafePickleError as error:
        raise UnsafePickleError(f"{path}: {error}") from None


def _numpy_globals() -> list[Any]:
    """The numpy types nnU-Net v1 stores in checkpoints (curves, best scores), for torch's weights-only loader."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2, numpy 1
    return [np.ndarray, np.dtype, multiarray.scalar, multiarray._reconstruct,
            *(type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG")]


def safe_load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A `.model` checkpoint on the CPU with torch's weights-only loader, said explicitly so that no environment
    variable can turn it off; a file that needs anything else raises UnsafePickleError naming it."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0]
        raise UnsafePickleError(f"{path}: {first_line}") from error


def restore_trainer(folder: str | os.PathLike, folds: Sequence[int | str] | int | str, checkpoint_name: str,
                    mixed_precision: bool | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """nnU-Net v1's trainer of a model folder, initialised for inference, and the checkpoint of each fold, every
    file read through the loaders above (nnU-Net's `load_model_and_checkpoint_files`, made safe).

    Call it inside `compat.redirected()`: nnU-Net's `restore_model` then reads the `.pkl` safely and finds our
    trainers."""
    from nnunet.training.model_restore import restore_model

    if isinstance(folds, (str, int)):
        folds = [folds]
    fold_folders = [Path(folder) / ("all" if str(fold) == "all" else f"fold_{fold}") for fold in folds]
    trainer = restore_model(str(fold_folders[0] / f"{checkpoint_name}.model.pkl"), fp16=mixed_precision)
    trainer.output_folder = trainer.output_folder_base = str(folder)
    trainer.update_fold(0)
    trainer.initialize(False)
    return trainer, [safe_load_checkpoint(fold_folder / f"{checkpoint_name}.model") for fold_folder in fold_folders]


def load_checkpoint_into(trainer: Any, path: str | os.PathLike, train: bool) -> None:
    """What nnU-Net v1's `load_checkpoint` does for any trainer (its log line included), with the file read by
    `safe_load_checkpoint`."""
    trainer.print_to_log_file("loading checkpoint", path, "train=", train)
    if not trainer.was_initialized:
        trainer.initialize(train)
    trainer.load_checkpoint_ram(safe_load_checkpoint(path), train)
