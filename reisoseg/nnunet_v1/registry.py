"""Trainer lookup by name and restricted loading of model-file pickles.

nnU-Net v1 finds trainers only inside its own package and reads each checkpoint's `.model.pkl` (and a model folder's
`plans.pkl`) with plain pickle, which runs whatever code the file names. Model folders may come from strangers, so
we read them with an unpickler that only rebuilds containers, numbers and numpy arrays.
"""
from __future__ import annotations

import io
import os
import pickle
from typing import Any

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


def trainer_classes() -> dict[str, type]:
    """Our trainers by the name stored in checkpoints and typed on command lines."""
    from reisoseg.nnunet_v1.trainers import TRAINERS

    return dict(TRAINERS)
