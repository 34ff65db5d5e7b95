"""Overlap metrics per class. Conventions: both empty -> Dice/IoU 1 (nothing to find, nothing found)."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np


def overlap_metrics(reference: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Dice, IoU, precision and recall of two boolean masks of the same shape."""
    if reference.shape != prediction.shape:
        raise ValueError(f"shape mismatch: reference {reference.shape} vs prediction {prediction.shape}")
    ref, pred = reference.astype(bool), prediction.astype(bool)
    tp = float(np.count_nonzero(ref & pred))
    fp = float(np.count_nonzero(pred & ~ref))
    fn = float(np.count_nonzero(ref & ~pred))
    empty = tp + fp + fn == 0
    return {
        "dice": 1.0 if empty else 2 * tp / (2 * tp + fp + fn),
        "iou": 1.0 if empty else tp / (tp + fp + fn),
        "precision": (1.0 if fn == 0 else 0.0) if tp + fp == 0 else tp / (tp + fp),
        "recall": (1.0 if fp == 0 else 0.0) if tp + fn == 0 else tp / (tp + fn),
    }


def hausdorff_95(reference: np.ndarray, prediction: np.ndarray, spacing: Sequence[float]) -> float:
    """95th-percentile symmetric surface distance in the units of `spacing` (nm); NaN if either mask is empty."""
    from medpy.metric.binary import hd95

    if not reference.any() or not prediction.any():
        return float("nan")
    return float(hd95(prediction.astype(bool), reference.astype(bool), voxelspacing=tuple(spacing)))


def per_class_metrics(reference: np.ndarray, prediction: np.ndarray, classes: Mapping[int, str], *,
                      spacing: Sequence[float] | None = None, instance_classes: Sequence[int] = (),
                      reference_instances: np.ndarray | None = None, prediction_instances: np.ndarray | None = None,
                      scores: Mapping[int, float] | None = None) -> dict[str, dict[str, float]]:
    """Overlap metrics per class (background excluded), keyed by class name; HD95 in nm when `spacing` is given,
    and instance metrics (`instances.instance_metrics`) for the values in `instance_classes`: of the instance label
    volumes where given (with `scores` per predicted id), else of each class's 3D connected components."""
    from reisoseg.evaluation.instances import connected_instances, instance_metrics

    results = {}
    for value, name in classes.items():
        if int(value) == 0:
            continue
        ref, pred = reference == value, prediction == value
        results[name] = overlap_metrics(ref, pred)
        if spacing is not None:
            results[name]["hd95_nm"] = hausdorff_95(ref, pred, spacing)
        if int(value) in instance_classes:
            results[name].update(instance_metrics(
                connected_instances(ref) if reference_instances is None else reference_instances,
                connected_instances(pred) if prediction_instances is None else prediction_instances,
                scores if prediction_instances is not None else None))
    return results
