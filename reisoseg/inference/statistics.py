"""The streamed first pass: whole-volume intensity statistics with one block in memory at a time.

As in nnU-Net's preprocessing, the volume is first cropped to the bounding box of its nonzero voxels (outside it the
segmentation is background) and normalised with statistics of that whole box.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from reisoseg.errors import ReIsoSegError
from reisoseg.inference.tiles import Box, block_box, block_indices, box_slices


@dataclass
class Statistics:
    """What the streamed first pass learns about the whole volume (over its nonzero bounding box)."""

    bbox: Box
    mean: float
    std: float
    voxels: int
    section_min: list[float]  # per section of the box: the clipping range of nnU-Net's in-plane resampling
    section_max: list[float]

    @classmethod
    def from_record(cls, record: dict) -> Statistics:
        """Back from the JSON manifest (`dataclasses.asdict` form)."""
        return cls(**{**record, "bbox": tuple(tuple(int(v) for v in axis) for axis in record["bbox"])})


class _Moments:
    """Count, mean and sum of squared deviations, merged block by block (Chan et al.) in float64."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        values = values.astype(np.float64, copy=False)
        count, mean = values.size, float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        delta = mean - self.mean
        total = self.count + count
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 0.0


class _Accumulator:
    """Moments and per-section ranges of the blocks added to it."""

    def __init__(self, sections: int, nonzero_only: bool):
        self.moments = _Moments()
        self.nonzero_only = nonzero_only
        self.section_min = np.full(sections, np.inf)
        self.section_max = np.full(sections, -np.inf)

    def add(self, values: np.ndarray, first_section: int) -> None:
        self.moments.add(values[values != 0] if self.nonzero_only else values)
        rows = slice(first_section, first_section + values.shape[0])
        self.section_min[rows] = np.minimum(self.section_min[rows], values.min(axis=(1, 2)))
        self.section_max[rows] = np.maximum(self.section_max[rows], values.max(axis=(1, 2)))


def volume_statistics(data: Any, source: str, block: Sequence[int], *, nonzero_only: bool,
                      progress: Callable[[], None] | None = None) -> Statistics:
    """Nonzero bounding box, mean, standard deviation and per-section range of a (lazily readable) volume, with one
    block in memory at a time.

    As nnU-Net: statistics cover the bounding box of the nonzero voxels (only the nonzero voxels when the plans
    normalise within the nonzero mask). Raises ReIsoSegError for NaN/Inf, empty or constant volumes.
    """
    from reisoseg.io.validation import IMAGE_DTYPES

    shape = tuple(int(s) for s in data.shape)
    if np.dtype(data.dtype) not in IMAGE_DTYPES:
        raise ReIsoSegError(f"{source}: unsupported image dtype {data.dtype}")
    if 0 in shape:
        raise ReIsoSegError(f"{source}: empty volume (shape {shape})")
    low, high = list(shape), [0, 0, 0]
    whole = _Accumulator(shape[0], nonzero_only)
    for index in block_indices(shape, block):
        box = block_box(index, shape, block)
        values = np.asarray(data[box_slices(box)])
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ReIsoSegError(f"{source}: image contains NaN or Inf (in z {box[0][0]}-{box[0][1] - 1})")
        whole.add(values, box[0][0])
        mask = values != 0
        if mask.any():
            for axis in range(3):
                other = tuple(a for a in range(3) if a != axis)
                where = np.flatnonzero(mask.any(axis=other))
                low[axis] = min(low[axis], box[axis][0] + int(where[0]))
                high[axis] = max(high[axis], box[axis][0] + int(where[-1]) + 1)
        if progress is not None:
            progress()
    if whole.section_min.min() == whole.section_max.max():
        raise ReIsoSegError(f"{source}: constant image (every voxel is {whole.section_min.min():g}): "
                            f"nothing to segment")
    bbox: Box = tuple(zip(low, high))  # type: ignore[assignment]
    accumulated = whole
    if bbox != tuple((0, s) for s in shape):  # nnU-Net crops first: only the box counts (a second read)
        cropped = tuple(hi - lo for lo, hi in bbox)
        accumulated = _Accumulator(cropped[0], nonzero_only)
        for index in block_indices(cropped, block):
            box = block_box(index, cropped, block)
            accumulated.add(np.asarray(data[box_slices(box, [lo for lo, _ in bbox])]), box[0][0])
    moments = accumulated.moments
    return Statistics(bbox, moments.mean, moments.std, moments.count, accumulated.section_min.tolist(),
                      accumulated.section_max.tolist())

