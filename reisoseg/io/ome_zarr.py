"""zarr arrays and OME-Zarr multiscale images/labels (NGFF 0.4 written; 0.4 and 0.5 read)."""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import zarr

from reisoseg.errors import ReIsoSegError
from reisoseg.io.base import Volume, to_nanometres


def _multiscales(attrs) -> list | None:
    if "multiscales" in attrs:
        return attrs["multiscales"]
    ome = attrs.get("ome")
    return ome.get("multiscales") if isinstance(ome, dict) else None


def read_zarr(path: str | os.PathLike, key: str | None = None) -> Volume:
    """A zarr array, a group's array `key`, or the full-resolution level of an OME-Zarr image (spacing, axes)."""
    node = zarr.open(str(path), mode="r")
    if key:
        node = node[key.strip("/")]
    spacing = None
    if isinstance(node, zarr.Group):
        multiscales = _multiscales(node.attrs)
        if not multiscales:
            arrays = list(node.array_keys())
            raise ReIsoSegError(f"{path}: zarr group without OME multiscales; name an array as "
                                f"{path}:<key> (arrays: {', '.join(arrays[:5]) or 'none'})")
        image = multiscales[0]
        axes = image.get("axes", [])
        names = [a["name"] if isinstance(a, dict) else a for a in axes]
        spatial = [i for i, a in enumerate(axes) if not isinstance(a, dict) or a.get("type", "space") == "space"]
        if names and [names[i] for i in spatial][-3:] != ["z", "y", "x"]:
            raise ReIsoSegError(f"{path}: OME axes {names}: expected spatial axes z, y, x")
        level = image["datasets"][0]
        array = node[level["path"]]
        scale = next((t["scale"] for t in level.get("coordinateTransformations", []) if t["type"] == "scale"), None)
        unit = next((a.get("unit") for a in axes if isinstance(a, dict) and a.get("name") == "x"), None)
        if scale is not None:
            spacing = to_nanometres(scale[-3:], unit or "", str(path))
        data = array
        if data.ndim > 3:  # leading channel/time axes of size 1
            if any(s != 1 for s in data.shape[:-3]):
                raise ReIsoSegError(f"{path}: OME image has non-spatial axes {names} of size > 1")
            data = data[(0,) * (data.ndim - 3)]
        return Volume(data, spacing, str(path), "zarr", "image-label" in node.attrs)
    if "spacing_nm" in node.attrs:
        spacing = tuple(float(v) for v in node.attrs["spacing_nm"])
    return Volume(node, spacing, str(path) + (f":{key}" if key else ""), "zarr")


def ome_attributes(spacing: Sequence[float], *, labels: bool = False, name: str = "volume") -> dict:
    """NGFF 0.4 group attributes of a single-scale (z, y, x) image in nanometres whose array is called "0"."""
    attributes = {"multiscales": [{
        "version": "0.4",
        "name": name,
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in "zyx"],
        "datasets": [{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [float(s) for s in spacing]}]}],
    }]}
    if labels:
        attributes["image-label"] = {"version": "0.4", "source": {"image": "../../"}}
    return attributes


def write_ome_zarr(path: str | os.PathLike, data: np.ndarray, spacing: Sequence[float], *,
                   labels: bool = False, chunks: Sequence[int] = (16, 256, 256), name: str = "volume") -> None:
    """Single-scale OME-Zarr (NGFF 0.4, zarr format 2) with axes z, y, x in nanometres."""
    group = zarr.open_group(str(path), mode="w", zarr_format=2)
    chunks = tuple(min(c, s) for c, s in zip(chunks, data.shape))
    array = group.create_array("0", shape=data.shape, chunks=chunks, dtype=data.dtype)
    array[...] = data
    group.attrs.update(ome_attributes(spacing, labels=labels, name=name))
