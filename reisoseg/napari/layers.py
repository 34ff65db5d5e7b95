"""Between reisoseg's volumes and napari's layers: the spacing (nm, z y x) is each layer's scale, so a 40 x 5 x 5 nm
stack shows its true proportions; files are opened lazily (dask), so a volume larger than memory opens at once."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import dask.array as da
import numpy as np
import zarr
from napari.utils.notifications import show_warning

from reisoseg.inference.instances import SEMANTIC
from reisoseg.inference.store import LABELS, PROBABILITIES
from reisoseg.instances.scores import read_scores
from reisoseg.io.volume import open_volume, volume_stem

LayerData = tuple[Any, dict, str]
SOURCE = "reisoseg_source"  # metadata: the file a layer was read from (a segmentation run reads it, and resumes)
SCORES = "reisoseg_scores"  # metadata: object id -> score, as `reisoseg segment --instances` stored them
UNITS = ("nm", "nm", "nm")


def lazy(data: Any) -> Any:
    """numpy arrays as they are; zarr, HDF5 and other sliceable arrays as dask arrays over their chunks."""
    if isinstance(data, np.ndarray):
        return data
    return da.from_array(data, chunks=getattr(data, "chunks", None) or "auto")


def layer_data(data: Any, spacing: Sequence[float], name: str, kind: str, *, source: str | None = None,
               **options: Any) -> LayerData:
    """A napari layer-data tuple whose scale is `spacing` in nm."""
    metadata = {**options.pop("metadata", {}), **({SOURCE: source} if source else {})}
    return data, {"name": name, "scale": tuple(float(s) for s in spacing), "units": UNITS, "metadata": metadata,
                  **options}, kind


def add_layers(viewer: Any, layers: list[LayerData]) -> list[Any]:
    """Add layer-data tuples to a viewer (or a `ViewerModel`), replacing layers of the same name (a rerun)."""
    added = []
    for data, options, kind in layers:
        names = options["name"] if isinstance(options["name"], list) else [options["name"]]
        for name in names:
            if name in viewer.layers:
                viewer.layers.remove(name)
        result = getattr(viewer, f"add_{kind}")(data, **options)
        added.extend(result if isinstance(result, list) else [result])
    return added


def layer_spacing(layer: Any) -> tuple[float, float, float]:
    """A 3D layer's spacing (nm, z y x): its scale."""
    return tuple(float(s) for s in layer.scale[-3:])  # type: ignore[return-value]


def layer_scores(layer: Any) -> dict[int, float] | None:
    """The objects' scores a layer carries (read with a segmentation), or None."""
    return {int(k): float(v) for k, v in layer.metadata.get(SCORES, {}).items()} or None


def layer_source(layer: Any) -> str | None:
    """The file a layer was read from by this plugin, if any."""
    return layer.metadata.get(SOURCE)


def is_segmentation(path: str | os.PathLike) -> bool:
    """An OME-Zarr that `reisoseg segment` completed (its group attributes hold the run's record)."""
    if Path(path).suffix != ".zarr" or not Path(path).is_dir():
        return False
    return "reisoseg" in zarr.open_group(str(path), mode="r").attrs


def segmentation_layers(path: str | os.PathLike) -> list[LayerData]:
    """The layers of a segmentation output: objects (with their scores) and classes for an instance run, classes
    otherwise, and the class probabilities where they were kept."""
    group = zarr.open_group(str(path), mode="r")
    spacing = group.attrs["reisoseg"]["settings"]["spacing"]
    stem, source = volume_stem(path), str(path)
    layers = []
    if SEMANTIC in group:
        layers.append(layer_data(lazy(group[SEMANTIC]), spacing, f"{stem} classes", "labels",
                                 source=f"{source}:{SEMANTIC}"))
        layers.append(layer_data(lazy(group[LABELS]), spacing, f"{stem} objects", "labels", source=source,
                                 metadata={SCORES: read_scores(path) or {}}))
    else:
        layers.append(layer_data(lazy(group[LABELS]), spacing, f"{stem} classes", "labels", source=source))
    if PROBABILITIES in group:
        probabilities = group[PROBABILITIES]
        layers.append(layer_data(lazy(probabilities), spacing, [f"{stem} probability {c}"
                                                                for c in range(probabilities.shape[0])],
                                 "image", channel_axis=0, visible=False, colormap="magma"))
    return layers


def volume_layers(path: str | os.PathLike) -> list[LayerData]:
    """Any volume `reisoseg.io` reads, as one layer: labels when the file says so, else an image. A file without
    spacing opens at 1 nm per voxel, with a warning."""
    if is_segmentation(path):
        return segmentation_layers(path)
    volume = open_volume(path)
    spacing = volume.spacing
    if spacing is None:
        show_warning(f"{volume.source}: no spacing in the file; shown at 1 nm per voxel (set the layer's scale)")
        spacing = (1.0, 1.0, 1.0)
    return [layer_data(lazy(volume.data), spacing, volume_stem(path), "labels" if volume.labels else "image",
                       source=volume.source)]
