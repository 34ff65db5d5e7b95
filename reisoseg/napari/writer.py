"""napari writer: a Labels layer as OME-Zarr `image-label` or TIFF, with its scale as the spacing in nm."""
from __future__ import annotations

from typing import Any

import numpy as np

from reisoseg.errors import ReIsoSegError
from reisoseg.io.volume import write_volume


def write_labels(path: str, data: Any, meta: dict) -> list[str]:
    """Write one 3D labels layer (read into memory) atomically; returns the path written."""
    if np.ndim(data) != 3:
        raise ReIsoSegError(f"{path}: only 3D (z, y, x) labels can be written, this layer has {np.ndim(data)} axes")
    if not str(path).lower().endswith((".zarr", ".tif", ".tiff")):
        raise ReIsoSegError(f"{path}: labels are written as .zarr (OME-Zarr) or .tif")
    write_volume(path, np.asarray(data), meta["scale"][-3:], labels=True)
    return [path]
