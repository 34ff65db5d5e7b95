"""Per-object measurements in physical units, block by block, so that volumes larger than memory can be measured.

One pass over the blocks accumulates, per object id: voxel count (volume), coordinate sums and second moments
(centroid, major axis), bounding box, the sections it occupies, its surface and, optionally, its foreground
probability. The surface is a marching-cubes mesh (scikit-image, anisotropic spacing) of the object's mask. Each
block meshes a disjoint set of marching cubes (those whose lower corner lies in the block, on a volume padded with
one background voxel), so block areas add up to the area of the whole-volume mesh.
The major axis is the full length of the solid ellipsoid with the same second moments (2·sqrt(5·λ_max)), with
each voxel counted as a box (variance spacing²/12 per axis), so a one-section object still has a z extent.
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from reisoseg.errors import ReIsoSegError
from reisoseg.io.atomic import atomic_file

COLUMNS = ("id", "volume_um3", "surface_area_um2", "bbox_z0", "bbox_y0", "bbox_x0", "bbox_z1", "bbox_y1", "bbox_x1",
           "centroid_z_nm", "centroid_y_nm", "centroid_x_nm", "sections", "major_axis_nm", "score")
DEFAULT_BLOCK = (64, 512, 512)


@dataclass
class _Object:
    count: int = 0
    first: np.ndarray = field(default_factory=lambda: np.full(3, np.iinfo(np.int64).max))
    last: np.ndarray = field(default_factory=lambda: np.full(3, -1))
    sums: np.ndarray = field(default_factory=lambda: np.zeros(3))  # nm
    products: np.ndarray = field(default_factory=lambda: np.zeros((3, 3)))  # nm²
    sections: set = field(default_factory=set)
    area_nm2: float = 0.0
    probability_sum: float = 0.0


def _surface_area(mask: np.ndarray, spacing: Sequence[float]) -> float:
    from skimage.measure import marching_cubes, mesh_surface_area

    if mask.all() or not mask.any() or min(mask.shape) < 2:
        return 0.0
    vertices, faces, _, _ = marching_cubes(mask.astype(np.float32), level=0.5, spacing=tuple(spacing))
    return float(mesh_surface_area(vertices, faces))


def _mesh_region(box: Sequence[tuple[int, int]], shape: Sequence[int]) -> list[tuple[int, int]]:
    """Voxels (padded coordinates, padding = 1) whose cubes this block owns: lower corners lo..hi-1 in padded
    coordinates, plus the final padding plane for the last block along an axis."""
    return [(lo, hi + 1 + (hi == size)) for (lo, hi), size in zip(box, shape)]


def _read_padded(labels: Any, region: Sequence[tuple[int, int]], shape: Sequence[int]) -> np.ndarray:
    """labels over `region` in coordinates of the volume padded by one zero voxel on every side."""
    out = np.zeros([hi - lo for lo, hi in region], dtype=labels.dtype)
    inner = [(max(lo - 1, 0), min(hi - 1, size)) for (lo, hi), size in zip(region, shape)]
    if all(lo < hi for lo, hi in inner):
        out[tuple(slice(lo + 1 - r[0], hi + 1 - r[0]) for (lo, hi), r in zip(inner, region))] = np.asarray(
            labels[tuple(slice(lo, hi) for lo, hi in inner)])
    return out


def measure_objects(labels: Any, spacing: Sequence[float], *, probabilities: Any = None,
                    scores: dict[int, float] | None = None, block: Sequence[int] = DEFAULT_BLOCK,
                    progress: Callable[[], None] | None = None) -> list[dict[str, float]]:
    """One row per object (see COLUMNS) of a lazily sliceable (z, y, x) integer label volume.

    `probabilities` (classes, z, y, x), if given, scores each object by its mean foreground probability
    (1 - background); else `scores` (id -> score) are reported where given.
    """
    from reisoseg.inference.tiles import block_box, block_indices, box_slices

    if np.dtype(labels.dtype).kind not in "iu":
        raise ReIsoSegError(f"labels must be integer object ids, got dtype {labels.dtype}")
    shape = tuple(int(s) for s in labels.shape)
    if len(shape) != 3:
        raise ReIsoSegError(f"labels must be a 3D (z, y, x) volume, got shape {shape}")
    spacing = np.asarray(spacing, dtype=np.float64)
    objects: dict[int, _Object] = {}
    for index in block_indices(shape, block):
        box = block_box(index, shape, block)
        values = np.asarray(labels[box_slices(box)])
        if (values < 0).any():
            raise ReIsoSegError(f"labels must be non-negative object ids (found {int(values.min())})")
        foreground = None
        if probabilities is not None:
            foreground = 1.0 - np.asarray(probabilities[(0, *box_slices(box))], dtype=np.float64)
        _accumulate(objects, values, np.array([lo for lo, _ in box]), spacing, foreground)
        region = _mesh_region(box, shape)
        padded = _read_padded(labels, region, shape)
        for object_id in np.unique(padded):
            if object_id == 0:
                continue
            where = np.nonzero(padded == object_id)
            crop = tuple(slice(max(int(w.min()) - 1, 0), int(w.max()) + 2) for w in where)
            objects.setdefault(int(object_id), _Object()).area_nm2 += _surface_area(padded[crop] == object_id,
                                                                                   spacing)
        if progress is not None:
            progress()
    return [_row(i, o, spacing, scores) for i, o in sorted(objects.items()) if o.count]


def _accumulate(objects: dict[int, _Object], values: np.ndarray, origin: np.ndarray, spacing: np.ndarray,
                foreground: np.ndarray | None) -> None:
    inside = values > 0
    if not inside.any():
        return
    coordinates = np.stack(np.nonzero(inside), 1) + origin
    ids, inverse = np.unique(values[inside], return_inverse=True)
    nm = coordinates * spacing
    counts = np.bincount(inverse, minlength=ids.size)
    sums = np.stack([np.bincount(inverse, nm[:, a], ids.size) for a in range(3)], 1)
    products = np.stack([np.stack([np.bincount(inverse, nm[:, a] * nm[:, b], ids.size) for b in range(3)], 1)
                         for a in range(3)], 1)
    probability = (np.bincount(inverse, foreground[inside], ids.size) if foreground is not None
                   else np.zeros(ids.size))
    for k, object_id in enumerate(ids.tolist()):
        mine = coordinates[inverse == k]
        entry = objects.setdefault(object_id, _Object())
        entry.count += int(counts[k])
        entry.sums += sums[k]
        entry.products += products[k]
        entry.first = np.minimum(entry.first, mine.min(0))
        entry.last = np.maximum(entry.last, mine.max(0))
        entry.sections.update(np.unique(mine[:, 0]).tolist())
        entry.probability_sum += float(probability[k])


def _row(object_id: int, entry: _Object, spacing: np.ndarray, scores: dict[int, float] | None) -> dict[str, float]:
    mean = entry.sums / entry.count
    covariance = entry.products / entry.count - np.outer(mean, mean) + np.diag(spacing ** 2 / 12)
    largest = float(np.linalg.eigvalsh(covariance)[-1])
    if entry.probability_sum:
        score = entry.probability_sum / entry.count
    else:
        score = (scores or {}).get(object_id, math.nan)
    return {"id": object_id, "volume_um3": entry.count * float(np.prod(spacing)) * 1e-9,
            "surface_area_um2": entry.area_nm2 * 1e-6,
            **{f"bbox_{a}0": int(v) for a, v in zip("zyx", entry.first)},
            **{f"bbox_{a}1": int(v) + 1 for a, v in zip("zyx", entry.last)},
            **{f"centroid_{a}_nm": float(v) for a, v in zip("zyx", mean)},
            "sections": len(entry.sections), "major_axis_nm": 2 * math.sqrt(5 * max(largest, 0.0)), "score": score}


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """Count and volume distribution (µm³)."""
    volumes = np.array([r["volume_um3"] for r in rows])
    if not volumes.size:
        return {"objects": 0}
    return {"objects": int(volumes.size), "total_volume_um3": float(volumes.sum()),
            "volume_min_um3": float(volumes.min()), "volume_median_um3": float(np.median(volumes)),
            "volume_mean_um3": float(volumes.mean()), "volume_max_um3": float(volumes.max())}


def summary_path(table: str | os.PathLike) -> Path:
    """Where `write_measurements` puts the summary of a table: beside it, as JSON."""
    return Path(table).with_suffix(".summary.json")


def write_measurements(rows: list[dict[str, float]], table: str | os.PathLike) -> dict[str, float]:
    """Write the rows as CSV (COLUMNS) and their summary beside it (atomically); returns the summary."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    summary = summarise(rows)
    with atomic_file(table) as temporary:
        temporary.write_text(buffer.getvalue())
    with atomic_file(summary_path(table)) as temporary:
        temporary.write_text(json.dumps(summary, indent=1))
    return summary
