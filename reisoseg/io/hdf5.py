"""HDF5 datasets (`file.h5:/path`); spacing from `element_size_um` (ilastik/BigDataViewer) or `spacing_nm`."""
from __future__ import annotations

import os
from typing import Sequence

import h5py
import numpy as np

from reisoseg.errors import ReIsoSegError
from reisoseg.io.base import LABELS_CONTENT, Volume


def _datasets(handle: h5py.File) -> list[str]:
    names: list[str] = []
    handle.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return names


def read_hdf5(path: str | os.PathLike, key: str | None) -> Volume:
    """Open one dataset lazily; without a key the file must hold exactly one dataset."""
    handle = h5py.File(path, "r")
    names = _datasets(handle)
    if key is None:
        if len(names) != 1:
            handle.close()
            raise ReIsoSegError(f"{path}: holds {len(names)} datasets ({', '.join(names[:5]) or 'none'}); "
                                f"name one as {path}:/path")
        key = names[0]
    if key.strip("/") not in names:
        handle.close()
        raise ReIsoSegError(f"{path}: no dataset {key!r} (datasets: {', '.join(names[:5]) or 'none'})")
    dataset = handle[key]
    attrs = dataset.attrs
    spacing = None
    if "spacing_nm" in attrs:
        spacing = tuple(float(v) for v in attrs["spacing_nm"])
    elif "element_size_um" in attrs:
        spacing = tuple(float(v) * 1000.0 for v in attrs["element_size_um"])
    return Volume(dataset, spacing, f"{path}:{key}", "hdf5", attrs.get("content") == LABELS_CONTENT)


def write_hdf5(path: str | os.PathLike, data: np.ndarray, spacing: Sequence[float], key: str = "data", *,
               labels: bool = False) -> None:
    with h5py.File(path, "w") as handle:
        dataset = handle.create_dataset(key, data=data, chunks=True, compression="gzip")
        if labels:
            dataset.attrs["content"] = LABELS_CONTENT
        dataset.attrs["element_size_um"] = np.array([float(s) / 1000.0 for s in spacing])
        dataset.attrs["spacing_nm"] = np.array([float(s) for s in spacing])
