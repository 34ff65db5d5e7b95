"""One way in and out for 3D volumes: `open_volume(path)` and `write_volume(path, ...)`.

Axis order is always (z, y, x); spacing is (z, y, x) in nanometres (µm in files is converted and said so).
Paths: `stack.tif` (multipage), a folder of per-section TIFF/PNG files, `file.h5:/path/in/file`, `volume.zarr`
(plain array, group with `key`, or OME-Zarr multiscales), `volume.nii.gz` / `.mha` / `.nrrd`.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from nibabel.filebasedimages import ImageFileError

from reisoseg.errors import ReIsoSegError
from reisoseg.io import hdf5, nifti, ome_zarr, tiff
from reisoseg.io.base import HDF5_SUFFIXES, NIFTI_SUFFIXES, TIFF_SUFFIXES, VOLUME_SUFFIXES, Volume

# what the readers raise for a corrupt, truncated or foreign file: I/O errors (h5py, zarr stores), malformed content
# (tifffile, zarr metadata and JSON: ValueError; gzip: EOFError, zlib.error; headers: struct.error), SimpleITK's
# RuntimeError, nibabel's ImageFileError. Anything else is a bug of ours and keeps its traceback.
CORRUPT_FILE_ERRORS = (OSError, ValueError, KeyError, EOFError, RuntimeError, zlib.error, struct.error,
                       ImageFileError)


def split_key(path: str | os.PathLike) -> tuple[str, str | None]:
    """`file.h5:/a/b` -> ('file.h5', '/a/b'); zarr paths may carry a key the same way."""
    text = str(path)
    for suffix in (*HDF5_SUFFIXES, ".zarr"):
        marker = suffix + ":"
        if marker in text:
            head, key = text.split(marker, 1)
            return head + suffix, key or None
    return text, None


def volume_stem(path: str | os.PathLike) -> str:
    """File name without its volume suffix (and without an HDF5/zarr `:key`): `a.nii.gz` -> `a`."""
    name = Path(split_key(path)[0]).name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def detect_format(path: str | os.PathLike) -> str:
    name = str(path).lower().rstrip("/")
    if name.endswith(".zarr") or (Path(path).is_dir() and (Path(path) / ".zattrs").exists()) or \
            (Path(path).is_dir() and (Path(path) / "zarr.json").exists()):
        return "zarr"
    if name.endswith(HDF5_SUFFIXES):
        return "hdf5"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(TIFF_SUFFIXES):
        return "tiff"
    if Path(path).is_dir():
        return "sections"
    raise ReIsoSegError(f"{path}: unsupported format (use TIFF, a folder of TIFF/PNG sections, HDF5, zarr or NIfTI)")


def open_volume(path: str | os.PathLike, key: str | None = None) -> Volume:
    """Open a volume lazily where the format allows. Raises ReIsoSegError naming the file on any problem."""

    path, embedded_key = split_key(path)
    key = key or embedded_key
    if not Path(path).exists():
        raise ReIsoSegError(f"{path}: no such file or folder")
    kind = detect_format(path)
    try:
        if kind == "tiff":
            volume = tiff.read_tiff(path)
        elif kind == "sections":
            volume = tiff.read_sections(path)
        elif kind == "hdf5":
            volume = hdf5.read_hdf5(path, key)
        elif kind == "zarr":
            volume = ome_zarr.read_zarr(path, key)
        else:
            data, spacing = nifti.read_nifti(path)
            volume = Volume(data, spacing, str(path), "nifti")
    except CORRUPT_FILE_ERRORS as error:
        raise ReIsoSegError(f"{path}: cannot read ({type(error).__name__}: {str(error).strip().splitlines()[0]})"
                            if str(error).strip() else f"{path}: cannot read ({type(error).__name__})") from error
    if len(volume.shape) != 3:
        raise ReIsoSegError(f"{path}: expected a 3D (z, y, x) volume, got shape {volume.shape}")
    return volume


def write_volume(path: str | os.PathLike, data: np.ndarray, spacing: Sequence[float], *,
                 key: str = "data", labels: bool = False) -> None:
    """Write (z, y, x) data with (z, y, x) nm spacing in the format the path names (atomically); `labels` marks it
    as label ids (OME-Zarr image-label; a mark in TIFF and HDF5 that `open_volume` reads back)."""
    from reisoseg.io.atomic import atomic_directory, atomic_file

    path, embedded_key = split_key(path)
    key = embedded_key or key
    kind = detect_format(path) if not str(path).lower().endswith(TIFF_SUFFIXES) else "tiff"
    if kind == "zarr":
        with atomic_directory(path, overwrite=True) as temporary:
            ome_zarr.write_ome_zarr(temporary, data, spacing, labels=labels)
        return
    if kind not in ("tiff", "hdf5", "nifti"):
        raise ReIsoSegError(f"{path}: cannot write this format; use .tif, .h5, .zarr or .nii.gz")
    with atomic_file(path) as temporary:
        if kind == "tiff":
            tiff.write_tiff(temporary, data, spacing, labels=labels)
        elif kind == "hdf5":
            hdf5.write_hdf5(temporary, data, spacing, key, labels=labels)
        else:
            nifti.write_nifti(temporary, data, spacing)
