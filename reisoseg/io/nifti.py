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
        raise ReIsoSegError(f"{path}: cannot read ({str(error).strip().splitlines()[-1]})") from error
    # NIfTI headers hold float32: 4.6 comes back as 4.5999999; 6 decimals of a nm are far below any physical meaning
    spacing = tuple(round(float(s), 6) for s in reversed(image.GetSpacing()))
    array = sitk.GetArrayFromImage(image)
    if array.dtype.kind == "f" and str(path).lower().endswith((".nii", ".nii.gz")) and not array.all():
        array = _with_non_finite_values(path, array)  # only a file with zeros can have lost a NaN or Inf
    return array, spacing  # type: ignore[return-value]


def _with_non_finite_values(path: str | os.PathLike, array: np.ndarray) -> np.ndarray:
    """ITK before 6 reads NaN and ±Inf in a NIfTI file as 0, silently (ITK pull request 6683): put the file's own
    values back, read with nibabel, so that validation rejects them instead of training on zeros."""
    import nibabel

    stored = np.asarray(nibabel.load(str(path)).dataobj)  # (x, y, z) in the file's voxel order, as ITK keeps it
    stored = stored.transpose(tuple(reversed(range(stored.ndim))))
    if stored.shape != array.shape:
        return array
    non_finite = ~np.isfinite(stored)
    if non_finite.any():
        array = array.copy()
        array[non_finite] = stored[non_finite]
    return array
