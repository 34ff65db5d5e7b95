"""Instance metrics from 3D connected components: one-to-one matching by IoU, F1 and AP at an IoU threshold."""
from __future__ import annotations

import cc3d
import numpy as np


def connected_instances(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """Label 3D connected components of a boolean mask (26-connectivity by default)."""
    return cc3d.connected_components(np.ascontiguousarray(mask.astype(np.uint8)), connectivity=connectivity)


def match_instances(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Greedy one-to-one matching by decreasing IoU of two instance label volumes.

    Returns (IoUs of the matched pairs, number of reference instances, number of predicted instances).
    """
    n_ref, n_pred = int(reference.max()), int(prediction.max())
    if n_ref == 0 or n_pred == 0:
        return np.zeros(0), n_ref, n_pred
    both = (reference > 0) & (prediction > 0)
    pairs, intersections = np.unique(reference[both].astype(np.int64) * (n_pred + 1) + prediction[both],
                                     return_counts=True)
    ref_ids, pred_ids = pairs // (n_pred + 1), pairs % (n_pred + 1)
    ref_sizes = np.bincount(reference.ravel(), minlength=n_ref + 1)
    pred_sizes = np.bincount(prediction.ravel(), minlength=n_pred + 1)
    ious = intersections / (ref_sizes[ref_ids] + pred_sizes[pred_ids] - intersections)
    used_ref, used_pred, matched = set(), set(), []
    for index in np.argsort(-ious, kind="stable"):
        r, p = int(ref_ids[index]), int(pred_ids[index])
        if r not in used_ref and p not in used_pred:
            used_ref.add(r)
            used_pred.add(p)
            matched.append(float(ious[index]))
    return np.array(matched), n_ref, n_pred


def instance_metrics(reference_mask: np.ndarray, prediction_mask: np.ndarray) -> dict[str, float]:
    """F1 at IoU 0.5 and AP-75 (TP / (TP + FP + FN) at IoU 0.75, i.e. average precision without scores) of the
    connected components of two semantic masks, plus the instance counts."""
    ious, n_ref, n_pred = match_instances(connected_instances(reference_mask), connected_instances(prediction_mask))
    result = {"reference_instances": float(n_ref), "predicted_instances": float(n_pred)}
    for name, threshold in (("f1_50", 0.5), ("ap_75", 0.75)):
        tp = float((ious >= threshold).sum())
        fp, fn = n_pred - tp, n_ref - tp
        if n_ref == 0 and n_pred == 0:
            result[name] = 1.0
        elif name == "f1_50":
            result[name] = 2 * tp / (2 * tp + fp + fn)
        else:
            result[name] = tp / (tp + fp + fn)
    return result
