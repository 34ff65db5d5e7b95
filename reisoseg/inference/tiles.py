"""Tile geometry: the blocks that tile a volume, and the windows of a sliding-window grid that a box needs.

Boxes are ((z0, z1), (y0, y1), (x0, x1)), half-open, in voxels. Nothing here knows about models or engines.
"""
from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import numpy as np

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
WindowGrid = Callable[[Sequence[int], Sequence[int], float], list[list[int]]]  # (patch, shape, step) -> starts


def block_counts(shape: Sequence[int], block: Sequence[int]) -> tuple[int, ...]:
    """Blocks per axis that tile `shape`."""
    return tuple(math.ceil(s / b) for s, b in zip(shape, block))


def block_indices(shape: Sequence[int], block: Sequence[int]) -> list[tuple[int, int, int]]:
    """Indices of the blocks that tile `shape` (the last block along an axis may be smaller)."""
    return list(itertools.product(*(range(c) for c in block_counts(shape, block))))


def block_box(index: Sequence[int], shape: Sequence[int], block: Sequence[int]) -> Box:
    return tuple((i * b, min((i + 1) * b, s)) for i, b, s in zip(index, block, shape))  # type: ignore[return-value]


def box_slices(box: Sequence[tuple[int, int]], origin: Sequence[int] = (0, 0, 0)) -> tuple[slice, ...]:
    """Slices of `box` shifted by `origin` (e.g. from cropped to input coordinates)."""
    return tuple(slice(lo + o, hi + o) for (lo, hi), o in zip(box, origin))


def windows_touching(needed: Sequence[tuple[int, int]], shape: Sequence[int], patch: Sequence[int],
                     step_size: float, grid: WindowGrid) -> tuple[list[tuple[int, int]], list[list[int]], list[int]]:
    """The windows of `grid` over a volume of `shape` that touch the box `needed`.

    Returns the box they cover and their starts relative to it, both in the volume's coordinates, and the number of
    windows in the whole grid. A volume smaller than the patch is padded (evenly, with zeros) first, as nnU-Net does.
    """
    padded = [max(s, p) for s, p in zip(shape, patch)]
    below = [(p - s) // 2 for p, s in zip(padded, shape)]
    starts = grid(patch, padded, step_size)
    touching = [[s for s in axis if s < hi + b and s + p > lo + b]
                for axis, (lo, hi), p, b in zip(starts, needed, patch, below)]
    region = [(axis[0] - b, axis[-1] + p - b) for axis, p, b in zip(touching, patch, below)]
    relative = [[s - axis[0] for s in axis] for axis in touching]
    return region, relative, [len(axis) for axis in starts]


def clipped(region: Sequence[tuple[int, int]], shape: Sequence[int]) -> list[tuple[int, int]]:
    """The part of `region` inside a volume of `shape`."""
    return [(max(lo, 0), min(hi, s)) for (lo, hi), s in zip(region, shape)]


def zero_padded(values: np.ndarray, inner: Sequence[tuple[int, int]], region: Sequence[tuple[int, int]]) -> np.ndarray:
    """`values` (covering `inner`) inside float32 zeros covering `region`."""
    out = np.zeros([hi - lo for lo, hi in region], dtype=np.float32)
    out[tuple(slice(lo - r[0], hi - r[0]) for (lo, hi), r in zip(inner, region))] = values
    return out
