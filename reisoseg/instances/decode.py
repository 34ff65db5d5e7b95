"""Predicted class probabilities -> object labels: interior seeds, a seeded watershed, a minimum volume in nm³ and a
minimum score.

The foreground is the semantic segmentation's (argmax is interior or boundary), so objects and semantic labels
agree. Seeds are the 6-connected components of its voxels whose interior probability passes `seed_threshold` and
that lie farther than `seed_erosion_nm` from any other voxel (an anisotropic distance transform in nm, `edt`): the
erosion cuts interiors that touch through a neck. With 40 nm sections and an erosion below 40 nm it acts in-plane
only. Seeds grow over the foreground by a watershed on the boundary probability, so touching objects split where the
network saw their boundary; foreground that no seed reaches (speckles predicted as boundary only) is dropped. The
landscape is local (each voxel's own probabilities), which is what lets blockwise decoding
(`reisoseg.inference.instances`) reproduce whole-volume decoding from a halo. Each object's score is its mean
foreground probability: AP ranks objects by it, and objects below `min_score` or `min_volume_nm3` are dropped (the
values that `reisoseg.instances.calibration` chooses on validation data).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from reisoseg.instances.target import InstanceSettings


def foreground_probability(probabilities: np.ndarray, settings: InstanceSettings) -> np.ndarray:
    return (probabilities[settings.instance_class].astype(np.float32)
            + probabilities[settings.boundary_class].astype(np.float32))


def foreground(probabilities: np.ndarray, settings: InstanceSettings) -> np.ndarray:
    """Voxels whose most probable class is the object interior or its boundary."""
    return np.isin(probabilities.argmax(0), (settings.instance_class, settings.boundary_class))


def seed_mask(probabilities: np.ndarray, settings: InstanceSettings, spacing: Sequence[float]) -> np.ndarray:
    """Seed voxels (see module doc). Exact inside any box whose margin reaches `seed_erosion_nm`: a non-interior
    voxel within that distance is then inside the box."""
    import edt

    # in float32 whatever the stored precision: numpy would compare float16 probabilities with the threshold
    # rounded to float16 (0.9 -> 0.8999), and calibration, which scores float32 copies, would choose for a
    # decoding other than the one `segment` applies to its float16 store
    interior = probabilities[settings.instance_class].astype(np.float32, copy=False)
    seeds = (interior >= settings.seed_threshold) & foreground(probabilities, settings)
    if settings.seed_erosion_nm > 0:
        distance = edt.edt(np.ascontiguousarray(seeds, dtype=np.uint8), anisotropy=tuple(float(s) for s in spacing),
                           black_border=False)
        seeds &= distance > settings.seed_erosion_nm
    return seeds


def erosion_margin(settings: InstanceSettings, spacing: Sequence[float]) -> tuple[int, ...]:
    """Voxels of context per axis that make `seed_mask` exact inside a box."""
    return tuple(math.ceil(settings.seed_erosion_nm / float(s)) + 1 if settings.seed_erosion_nm > 0 else 0
                 for s in spacing)


def components(mask: np.ndarray) -> np.ndarray:
    """uint32 6-connected components of a seed mask, numbered from 1."""
    import cc3d

    return cc3d.connected_components(np.ascontiguousarray(mask, dtype=np.uint8), connectivity=6,
                                     out_dtype=np.uint32)


def grow(probabilities: np.ndarray, seeds: np.ndarray, settings: InstanceSettings) -> np.ndarray:
    """Seeds flooded over the foreground along rising boundary probability (6-connected)."""
    from skimage.segmentation import watershed

    if not seeds.any():
        return np.zeros(seeds.shape, np.uint32)
    elevation = probabilities[settings.boundary_class].astype(np.float32)
    return watershed(elevation, markers=seeds, mask=foreground(probabilities, settings),
                     connectivity=1).astype(np.uint32)


def object_sums(labels: np.ndarray, foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, voxel counts, sums of foreground probability) of the nonzero labels present."""
    inside = labels > 0
    ids, inverse, counts = np.unique(labels[inside], return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=foreground[inside].astype(np.float64), minlength=ids.size)
    return ids, counts, sums


def min_voxels(settings: InstanceSettings, spacing: Sequence[float]) -> int:
    return max(1, math.ceil(settings.min_volume_nm3 / float(np.prod(spacing)) - 1e-9))


def kept_objects(counts: np.ndarray, scores: np.ndarray, settings: InstanceSettings,
                 spacing: Sequence[float]) -> np.ndarray:
    """Which objects (voxel counts, scores) pass the minimum volume and the minimum score."""
    return (counts >= min_voxels(settings, spacing)) & (scores >= settings.min_score)


def undecided_objects(probabilities: np.ndarray, spacing: Sequence[float],
                      settings: InstanceSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every grown object before the size and score cuts: (labels, ids, voxel counts, scores)."""
    labels = grow(probabilities, components(seed_mask(probabilities, settings, spacing)), settings)
    ids, counts, sums = object_sums(labels, foreground_probability(probabilities, settings))
    return labels, ids, counts, sums / np.maximum(counts, 1)


def decode_instances(probabilities: np.ndarray, spacing: Sequence[float],
                     settings: InstanceSettings) -> tuple[np.ndarray, dict[int, float]]:
    """Whole-volume decoding of (classes, z, y, x) probabilities: uint32 labels 1..N and a score per object."""
    labels, ids, counts, scores = undecided_objects(probabilities, spacing, settings)
    kept = kept_objects(counts, scores, settings, spacing)
    lookup = np.zeros(int(labels.max()) + 1, np.uint32)
    lookup[ids[kept]] = np.arange(1, int(kept.sum()) + 1, dtype=np.uint32)
    return lookup[labels], {int(new): float(score) for new, score in zip(lookup[ids[kept]], scores[kept])}
