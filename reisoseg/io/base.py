"""What every format module shares: the `Volume` they return, suffixes and spacing units (no format imports)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from reisoseg.errors import ReIsoSegError

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".mha", ".mhd", ".nrrd")
TIFF_SUFFIXES = (".tif", ".tiff")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
SECTION_SUFFIXES = (".tif", ".tiff", ".png")
# longest first, so that "a.ome.tif" loses ".ome.tif" and "a.nii.gz" loses ".nii.gz"
VOLUME_SUFFIXES = (".ome.tif", ".nii.gz", ".tiff", ".tif", ".hdf5", ".h5", ".zarr", ".nii", ".mha", ".mhd", ".nrrd")
UNIT_TO_NM = {"nm": 1.0, "nanometer": 1.0, "nanometre": 1.0, "um": 1000.0, "µm": 1000.0, "micron": 1000.0,
              "micrometer": 1000.0, "micrometre": 1000.0, "\\u00B5m": 1000.0, "mm": 1e6, "millimeter": 1e6,
              "pixel": None, "": None}


LABELS_CONTENT = "labels"  # how our files say that they hold labels (ImageJ `content`, OME `Name`, HDF5 `content`)


@dataclass
class Volume:
    """A 3D volume: `data` is (z, y, x), numpy or lazily sliceable (h5py/zarr); `spacing` (z, y, x) nm or None;
    `labels`: the file says it holds label ids (OME-Zarr image-label, or written by `write_volume(labels=True)`)."""

    data: Any
    spacing: tuple[float, float, float] | None
    source: str
    format: str
    labels: bool = False

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    def read(self) -> np.ndarray:
        """The whole volume as a numpy array."""
        return np.asarray(self.data[...])


def to_nanometres(values: Sequence[float], unit: str | None, source: str) -> tuple[float, ...] | None:
    """Spacing values in `unit` converted to nm; None if the unit carries no physical size (pixels)."""
    key = (unit or "").strip().lower()
    if key not in UNIT_TO_NM:
        raise ReIsoSegError(f"{source}: unknown spacing unit {unit!r}; give `spacing` in nm")
    factor = UNIT_TO_NM[key]
    return None if factor is None else tuple(float(v) * factor for v in values)
