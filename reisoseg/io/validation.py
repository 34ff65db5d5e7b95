"""Checks run before anything is written. Each failure is one ReIsoSegError naming the file and the problem."""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from reisoseg.errors import ReIsoSegError

IMAGE_DTYPES = tuple(np.dtype(t) for t in ("uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                                           "float64"))
SPACING_TOLERANCE = 0.01  # relative difference still taken as "the same spacing"


def check_image(source: str, data: np.ndarray) -> None:
    """Empty, unsupported dtype, NaN/Inf or constant images are rejected."""
    if data.size == 0:
        raise ReIsoSegError(f"{source}: empty volume (shape {data.shape})")
    if data.dtype not in IMAGE_DTYPES:
        raise ReIsoSegError(f"{source}: unsupported image dtype {data.dtype} "
                            f"(use one of {', '.join(str(d) for d in IMAGE_DTYPES)})")
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        raise ReIsoSegError(f"{source}: image contains NaN or Inf")
    low, high = data.min(), data.max()
    if low == high:
        raise ReIsoSegError(f"{source}: constant image (every voxel is {low}): nothing to segment")


def check_label_values(source: str, data: np.ndarray) -> None:
    """A label volume holds whole numbers: integers, or floats without NaN, Inf or fractions (NIfTI files often store
    labels as floats)."""
    if data.size == 0:
        raise ReIsoSegError(f"{source}: empty label volume (shape {data.shape})")
    if data.dtype.kind not in "biuf":
        raise ReIsoSegError(f"{source}: unsupported label dtype {data.dtype}")
    if data.dtype.kind == "f" and (not np.isfinite(data).all() or not np.array_equal(data, np.round(data))):
        raise ReIsoSegError(f"{source}: label values must be whole numbers")


def check_labels(source: str, data: np.ndarray, declared: Iterable[int]) -> None:
    """Labels must be integers from the declared values."""
    check_label_values(source, data)
    found = set(np.unique(data).astype(np.int64).tolist())
    unknown = sorted(found - set(int(v) for v in declared))
    if unknown:
        raise ReIsoSegError(f"{source}: label values {unknown[:8]} are not declared (declared: {sorted(declared)})")


def check_same_shape(image_source: str, image_shape: Sequence[int], label_source: str,
                     label_shape: Sequence[int]) -> None:
    if tuple(image_shape) != tuple(label_shape):
        raise ReIsoSegError(f"{label_source}: label shape {tuple(label_shape)} differs from image {image_source} "
                            f"shape {tuple(image_shape)}")


def resolve_spacing(source: str, metadata: Sequence[float] | None, given: Sequence[float] | None) -> tuple:
    """The (z, y, x) nm spacing to use: `given` if it agrees with the file's metadata, else the metadata."""
    if given is not None:
        if len(given) != 3 or any(float(s) <= 0 for s in given):
            raise ReIsoSegError(f"`spacing` must be three positive numbers (z y x, nm), got {list(given)}")
        if metadata is not None and not np.allclose(given, metadata, rtol=SPACING_TOLERANCE):
            raise ReIsoSegError(f"{source}: `spacing` {list(map(float, given))} nm contradicts the file's metadata "
                                f"{[round(float(s), 4) for s in metadata]} nm (drop `spacing` or fix the file)")
        return tuple(float(s) for s in given)
    if metadata is None:
        raise ReIsoSegError(f"{source}: no spacing in the file; give `spacing` (z y x) in nm")
    if any(float(s) <= 0 for s in metadata):
        raise ReIsoSegError(f"{source}: non-positive spacing {list(metadata)} in the file's metadata")
    return tuple(float(s) for s in metadata)


def z_axis_warning(source: str, spacing: Sequence[float]) -> str | None:
    """A warning when the coarsest axis is not the one called z (axis order probably wrong)."""
    axis = int(np.argmax(spacing))
    if axis != 0 and spacing[axis] > spacing[0] * (1 + SPACING_TOLERANCE):
        return (f"{source}: the largest spacing ({spacing[axis]} nm) is on axis {'zyx'[axis]}, not z "
                f"({spacing[0]} nm): check the axis order")
    return None
