"""NIfTI/MHA volumes through SimpleITK. ITK stores (x, y, z); we always hand out (z, y, x)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import SimpleITK as sitk

from reisoseg.errors import ReIsoSegError


def write_nifti(path: str | os.PathLike, array: np.ndarray, spacing_zyx: Sequence[float]) -> None:
    """Write a (z, y, x) array with its (z, y, x) spacing."""
    if array.ndim != 3:
        raise ValueError(f"{path}: expected a 3D (z, y, x) array, got shape {array.shape}")
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(tuple(float(s) for s in reversed(spacing_zyx)))
    sitk.WriteImage(image, str(path), useCompression=True)


def read_nifti(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Read a volume as ((z, y, x) array, (z, y, x) spacing)."""
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise ReIsoSegError(f"{path}: cannot read ({str(error).strip().splitlines()[-1]})") from None
    # NIfTI headers hold float32: 4.6 comes back as 4.5999999; 6 decimals of a nm are far below any physical meaning
    spacing = tuple(round(float(s), 6) for s in reversed(image.GetSpacing()))
    return sitk.GetArrayFromImage(image), spacing  # type: ignore[return-value]
