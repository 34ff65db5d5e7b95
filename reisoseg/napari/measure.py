"""What the Measure widget does: `reisoseg measure` on an objects layer into the layer's `features`, objects below
a score or a size hidden, the viewer centred on a chosen object, and the table exported as the CLI's CSV."""
from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np
import pandas as pd
from napari.utils.colormaps import DirectLabelColormap

from reisoseg.errors import ReIsoSegError
from reisoseg.instances.measure import COLUMNS, measure_objects, write_measurements
from reisoseg.napari.layers import layer_scores, layer_spacing

TRANSPARENT = np.zeros(4, np.float32)


def measure_layer(layer: Any, *, progress: Callable[[], None] | None = None) -> pd.DataFrame:
    """Measure every object of a Labels layer (block by block) and store the table as the layer's features (napari's
    `index` column is the object id)."""
    if np.dtype(layer.data.dtype).kind not in "iu":
        raise ReIsoSegError(f"{layer.name}: objects must be integer ids, got {layer.data.dtype}")
    rows = measure_objects(layer.data, layer_spacing(layer), scores=layer_scores(layer), progress=progress)
    table = pd.DataFrame(rows, columns=list(COLUMNS))
    layer.features = table.assign(index=table["id"])
    return table


def measurements(layer: Any) -> list[dict[str, float]]:
    """The rows `measure_layer` stored on the layer."""
    if "id" not in layer.features:
        raise ReIsoSegError(f"{layer.name}: not measured yet")
    return [{column: row[column] for column in COLUMNS} for row in layer.features.to_dict("records")]


def export_csv(layer: Any, path: str | os.PathLike) -> dict[str, float]:
    """The layer's table as `reisoseg measure` writes it (CSV and summary); returns the summary."""
    return write_measurements(measurements(layer), path)


def hide_objects(layer: Any, *, min_score: float = 0.0, min_volume_um3: float = 0.0) -> int:
    """Show only the measured objects with at least `min_score` (objects without a score stay) and
    `min_volume_um3`; returns how many are hidden."""
    table = layer.features
    if "id" not in table:
        raise ReIsoSegError(f"{layer.name}: measure it before hiding objects")
    ids = table["id"].to_numpy(np.int64)
    scores = table["score"].to_numpy(float)
    hidden = (table["volume_um3"].to_numpy(float) < min_volume_um3) | (~np.isnan(scores) & (scores < min_score))
    colours = layer.colormap.map(ids) if len(ids) else np.zeros((0, 4), np.float32)
    colours[hidden] = TRANSPARENT
    layer.colormap = DirectLabelColormap(color_dict={None: TRANSPARENT, 0: TRANSPARENT,
                                                     **{int(i): c for i, c in zip(ids, colours)}})
    return int(hidden.sum())


def centre_on_object(viewer: Any, layer: Any, object_id: int) -> tuple[float, float, float]:
    """Move the viewer to an object's centroid (world coordinates, nm) and select it; returns the centroid."""
    table = layer.features
    rows = table[table["id"] == object_id]
    if rows.empty:
        raise ReIsoSegError(f"{layer.name}: no measured object {object_id}")
    centroid = tuple(float(rows.iloc[0][f"centroid_{axis}_nm"]) + float(offset)
                     for axis, offset in zip("zyx", layer.translate[-3:]))
    viewer.dims.point = centroid if viewer.dims.ndim == 3 else (*viewer.dims.point[:-3], *centroid)
    viewer.camera.center = centroid
    layer.selected_label = int(object_id)
    return centroid  # type: ignore[return-value]


def cell_text(column: str, value: float) -> str:
    """How the table shows a measurement: ids and counts whole, the rest to four significant digits, no score
    blank."""
    if column in ("id", "sections"):
        return str(int(value))
    return "" if math.isnan(value) else f"{value:.4g}"
