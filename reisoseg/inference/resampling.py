"""Any box of nnU-Net's whole-volume resampling (v1, and v2 with the same defaults), computed from a box of the input.

nnU-Net resamples a whole volume of `n` voxels along an axis to `m = round(n * spacing / target)` voxels with
`skimage.transform.resize` (spline order 3, edge mode, no anti-aliasing, output clipped to the input's range) and,
for anisotropic data, section by section in-plane with the nearest section along z (`order_z = 0`); its export
resamples the probabilities back with order 1. All of these place output voxel `r` at input coordinate
`(r + 0.5) * n / m - 0.5`. Evaluating that same mapping on a box of the input with `scipy.ndimage.map_coordinates`
reproduces the whole-volume result inside the box, up to the spline prefilter's boundary, which decays by a factor
of 0.27 per voxel: the input box is read `SPLINE_MARGIN` voxels wider.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage

SPLINE_MARGIN = 12  # voxels of input read beyond a box for the order-3 prefilter (0.27**12 ~ 1.5e-7)


@dataclass(frozen=True)
class AxisMap:
    """One axis of a resampling from `source` to `target` voxels; `nearest` for nnU-Net's separate-z axis."""

    source: int
    target: int
    nearest: bool

    def to_source(self, positions: np.ndarray) -> np.ndarray:
        return (positions + 0.5) * (self.source / self.target) - 0.5

    def to_target(self, positions: np.ndarray) -> np.ndarray:
        return (positions + 0.5) * (self.target / self.source) - 0.5

    def nearest_source(self, positions: np.ndarray) -> np.ndarray:
        """Source index of each target position with order 0 and edge clamping, as map_coordinates picks it."""
        table = np.arange(self.source, dtype=np.float64)
        return ndimage.map_coordinates(table, [self.to_source(positions)], order=0, mode="nearest").astype(int)

    def source_range(self, lo: int, hi: int) -> tuple[int, int]:
        """The source voxels that target voxels [lo, hi) are interpolated from (with the spline margin)."""
        if self.nearest:
            picked = self.nearest_source(np.arange(lo, hi, dtype=np.float64))
            return int(picked.min()), int(picked.max()) + 1
        first, last = self.to_source(np.array([lo, hi - 1], dtype=np.float64))
        return max(0, int(np.floor(first)) - SPLINE_MARGIN), min(self.source, int(np.floor(last)) + SPLINE_MARGIN + 2)

    def target_range_for_linear(self, lo: int, hi: int) -> tuple[int, int]:
        """The target voxels that source voxels [lo, hi) are read back from (order 1, or nearest on z)."""
        if self.nearest:
            back = AxisMap(self.target, self.source, True)
            picked = back.nearest_source(np.arange(lo, hi, dtype=np.float64))
            return int(picked.min()), int(picked.max()) + 1
        first, last = self.to_target(np.array([lo, hi - 1], dtype=np.float64))
        return max(0, int(np.floor(first))), min(self.target, int(np.floor(last)) + 2)


def axis_maps(shape: Sequence[int], spacing: Sequence[float], target_spacing: Sequence[float],
              separate_axis: int | None) -> list[AxisMap]:
    """nnU-Net's target shape `round(shape * spacing / target)`; the separate axis is resampled by nearest."""
    return [AxisMap(int(n), int(round(n * s / t)), axis == separate_axis)
            for axis, (n, s, t) in enumerate(zip(shape, spacing, target_spacing))]


def _coordinates(maps: Sequence[AxisMap], box: Sequence[tuple[int, int]], origin: Sequence[int],
                 forward: bool) -> list[np.ndarray]:
    return [(m.to_source if forward else m.to_target)(np.arange(lo, hi, dtype=np.float64)) - o
            for m, (lo, hi), o in zip(maps, box, origin)]


def resample_box(source: np.ndarray, origin: Sequence[int], maps: Sequence[AxisMap], box: Sequence[tuple[int, int]],
                 clip: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Target voxels `box` of the resampled volume, from the source box starting at `origin`.

    `clip` is (low, high) per source section (z, indexed like the whole source) when z is the separate axis, else one
    (low, high) pair: skimage's resize clips each resized image to that image's range.
    """
    coordinates = _coordinates(maps, box, origin, forward=True)
    source = source.astype(np.float64, copy=False)
    if maps[0].nearest:
        sections = maps[0].nearest_source(np.arange(box[0][0], box[0][1], dtype=np.float64)) - origin[0]
        grid = np.meshgrid(coordinates[1], coordinates[2], indexing="ij")
        out = np.empty([hi - lo for lo, hi in box], dtype=np.float32)
        cache: dict[int, np.ndarray] = {}
        for row, section in enumerate(sections):
            if section not in cache:
                plane = ndimage.map_coordinates(source[section], grid, order=3, mode="nearest")
                absolute = section + origin[0]
                cache[section] = np.clip(plane, clip[0][absolute], clip[1][absolute])
            out[row] = cache[section]
        return out
    grid = np.meshgrid(*coordinates, indexing="ij")
    out = ndimage.map_coordinates(source, grid, order=3, mode="nearest")
    return np.clip(out, clip[0], clip[1]).astype(np.float32)


def resample_back(probabilities: np.ndarray, origin: Sequence[int], maps: Sequence[AxisMap],
                  box: Sequence[tuple[int, int]]) -> np.ndarray:
    """Class probabilities at source voxels `box`, from target-space probabilities starting at `origin` (order 1;
    nearest along the separate axis), as nnU-Net's segmentation export resamples them."""
    coordinates = _coordinates(maps, box, origin, forward=False)
    out = np.empty((probabilities.shape[0], *[hi - lo for lo, hi in box]), dtype=np.float32)
    if maps[0].nearest:
        back = AxisMap(maps[0].target, maps[0].source, True)
        sections = back.nearest_source(np.arange(box[0][0], box[0][1], dtype=np.float64)) - origin[0]
        grid = np.meshgrid(coordinates[1], coordinates[2], indexing="ij")
        for channel in range(probabilities.shape[0]):
            for row, section in enumerate(sections):
                out[channel, row] = ndimage.map_coordinates(probabilities[channel, section].astype(np.float64), grid,
                                                            order=1, mode="nearest")
        return out
    grid = np.meshgrid(*coordinates, indexing="ij")
    for channel in range(probabilities.shape[0]):
        out[channel] = ndimage.map_coordinates(probabilities[channel].astype(np.float64), grid, order=1,
                                               mode="nearest")
    return out
