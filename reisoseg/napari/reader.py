"""napari reader: reisoseg's OME-Zarr outputs, and the TIFF, HDF5 and zarr volumes `reisoseg.io` reads."""
from __future__ import annotations

from typing import Callable

from reisoseg.errors import ReIsoSegError
from reisoseg.io.volume import detect_format, split_key
from reisoseg.napari.layers import LayerData, volume_layers

READABLE = ("zarr", "tiff", "hdf5")


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    """The reader for one path of a format reisoseg reads, else None (napari asks another plugin)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    try:
        readable = detect_format(split_key(str(path).rstrip("/"))[0]) in READABLE
    except ReIsoSegError:
        return None
    return read_layers if readable else None


def read_layers(path: str | list[str]) -> list[LayerData]:
    return volume_layers((path[0] if isinstance(path, list) else path).rstrip("/"))
