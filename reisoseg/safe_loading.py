"""Model files read without unrestricted pickle, whatever the environment says, for either engine.

Model folders may come from strangers. nnU-Net v1 reads pickles (`.model.pkl`, `plans.pkl`) with plain pickle and
checkpoints with a `torch.load` that `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` (set by many v1 users) turns into plain
pickle too; nnU-Net v2 loads its checkpoints with `weights_only=False`. So every model file that we or an engine read
on our behalf goes through here: pickles with an unpickler that only rebuilds containers, numbers and numpy arrays,
checkpoints with `torch.load(weights_only=True)` and an explicit list of the numpy globals the engines store.
"""
from __future__ import annotations

import io
import os
import pickle
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
    """The numpy types nnU-Net stores in checkpoints (curves, best scores), for torch's weights-only loader."""
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2, numpy 1
    return [np.ndarray, np.dtype, multiarray.scalar, multiarray._reconstruct,
            *(type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG")]


def safe_load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint (v1's `.model`, v2's `.pth`) on the CPU with torch's weights-only loader, said explicitly so
    that no environment variable can turn it off; a file that needs anything else raises UnsafePickleError naming
    it."""
    try:
        with torch.serialization.safe_globals(_numpy_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[0]
        raise UnsafePickleError(f"{path}: {first_line}") from error
