"""Instance metrics of two label volumes: matching by IoU, F1, scored AP (COCO / MitoEM style), VOI and ARI.

Objects are the ids of instance label volumes; a semantic mask becomes objects through its 3D connected components
(`connected_instances`). AP ranks predicted objects by score (higher first; without scores all tie, and ties keep
id order): each takes the unmatched reference object it overlaps most, a true positive if their IoU reaches the
threshold. AP is the area under the precision envelope of that precision-recall curve (all-point interpolation).
VOI (in bits) and the adjusted Rand index count every voxel, background as one segment. The error counts say what
went wrong, by majority overlap: a *false* object has most of its voxels outside every reference object, a *missed*
one most of its voxels outside every predicted object; a *merge* is a predicted object that holds most of each of two
or more reference objects, a *split* a reference object that holds most of each of two or more predicted objects.
"""
from __future__ import annotations

from typing import Mapping

import cc3d
import numpy as np


def connected_instances(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """Label 3D connected components of a boolean mask (26-connectivity by default)."""
    return cc3d.connected_components(np.ascontiguousarray(mask.astype(np.uint8)), connectivity=connectivity)


def _compact(labels: np.ndarray) -> np.ndarray:
    """Ids renumbered 1..N in increasing order of the original ids."""
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        inverse = inverse + 1
    return inverse.reshape(labels.shape).astype(np.int64)


def _pairs(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, ...]:
    """(reference id, prediction id, voxels in common) of every overlapping pair of two compact label volumes, and
    the sizes of every reference and predicted object (index = id; index 0 is the background)."""
    n_ref, n_pred = int(reference.max()), int(prediction.max())
    both = (reference > 0) & (prediction > 0)
    pairs, intersections = np.unique(reference[both] * (n_pred + 1) + prediction[both], return_counts=True)
    return (pairs // (n_pred + 1), pairs % (n_pred + 1), intersections,
            np.bincount(reference.ravel(), minlength=n_ref + 1), np.bincount(prediction.ravel(), minlength=n_pred + 1))


def _overlaps(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, int]:
    """(reference id, prediction id, IoU) of every overlapping pair of two compact label volumes, and the counts."""
    ref_ids, pred_ids, intersections, ref_sizes, pred_sizes = _pairs(reference, prediction)
    ious = intersections / (ref_sizes[ref_ids] + pred_sizes[pred_ids] - intersections)
    return ref_ids, pred_ids, ious, ref_sizes.size - 1, pred_sizes.size - 1


def match_instances(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Greedy one-to-one matching by decreasing IoU of two instance label volumes.

    Returns (IoUs of the matched pairs, number of reference instances, number of predicted instances).
    """
    ref_ids, pred_ids, ious, n_ref, n_pred = _overlaps(_compact(reference), _compact(prediction))
    used_ref, used_pred, matched = set(), set(), []
    for index in np.argsort(-ious, kind="stable"):
        r, p = int(ref_ids[index]), int(pred_ids[index])
        if r not in used_ref and p not in used_pred:
            used_ref.add(r)
            used_pred.add(p)
            matched.append(float(ious[index]))
    return np.array(matched), n_ref, n_pred


def average_precision(reference: np.ndarray, prediction: np.ndarray, scores: Mapping[int, float] | None,
                      threshold: float) -> float:
    """AP at an IoU threshold of instance label volumes; `scores` maps prediction ids to scores (see module doc)."""
    pred_original = np.unique(prediction[prediction > 0])
    ref_ids, pred_ids, ious, n_ref, n_pred = _overlaps(_compact(reference), _compact(prediction))
    if n_ref == 0:
        return 1.0 if n_pred == 0 else 0.0
    if n_pred == 0:
        return 0.0
    score = np.array([(scores or {}).get(int(i), 1.0) for i in pred_original])
    candidates: dict[int, list[tuple[float, int]]] = {}
    for r, p, iou in zip(ref_ids, pred_ids, ious):
        if iou >= threshold:
            candidates.setdefault(int(p), []).append((float(iou), int(r)))
    used, hits = set(), []
    for p in np.argsort(-score, kind="stable") + 1:
        best = max(((iou, r) for iou, r in candidates.get(int(p), []) if r not in used), default=None)
        hits.append(best is not None)
        if best is not None:
            used.add(best[1])
    tp = np.cumsum(hits)
    precision, recall = tp / np.arange(1, len(hits) + 1), tp / n_ref
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * envelope))


def _contingency(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel counts of every (reference, prediction) label pair, and the row and column sums."""
    ref, pred = _compact(reference).ravel(), _compact(prediction).ravel()
    _, joint = np.unique(ref * (int(pred.max()) + 1) + pred, return_counts=True)
    return joint.astype(np.float64), np.bincount(ref).astype(np.float64), np.bincount(pred).astype(np.float64)


def variation_of_information(reference: np.ndarray, prediction: np.ndarray) -> tuple[float, float]:
    """(split, merge) in bits: H(prediction | reference) and H(reference | prediction)."""
    joint, rows, columns = _contingency(reference, prediction)
    total = joint.sum()

    def entropy(counts: np.ndarray) -> float:
        p = counts[counts > 0] / total
        return float(-(p * np.log2(p)).sum())

    h_joint = entropy(joint)
    return h_joint - entropy(rows), h_joint - entropy(columns)


def adjusted_rand_index(reference: np.ndarray, prediction: np.ndarray) -> float:
    joint, rows, columns = _contingency(reference, prediction)

    def pairs(counts: np.ndarray) -> float:
        return float((counts * (counts - 1) / 2).sum())

    expected = pairs(rows) * pairs(columns) / pairs(np.array([joint.sum()]))
    largest = (pairs(rows) + pairs(columns)) / 2
    return 1.0 if largest == expected else (pairs(joint) - expected) / (largest - expected)


def object_errors(reference: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Counts of false, missed, merged and split objects of two instance label volumes (see module doc)."""
    ref_ids, pred_ids, intersections, ref_sizes, pred_sizes = _pairs(_compact(reference), _compact(prediction))
    ref_inside = np.bincount(ref_ids, weights=intersections, minlength=ref_sizes.size)
    pred_inside = np.bincount(pred_ids, weights=intersections, minlength=pred_sizes.size)
    most_of_ref = 2 * intersections > ref_sizes[ref_ids]  # the pair holds most of the reference object
    most_of_pred = 2 * intersections > pred_sizes[pred_ids]
    return {"false_objects": float((2 * pred_inside < pred_sizes)[1:].sum()),
            "missed_objects": float((2 * ref_inside < ref_sizes)[1:].sum()),
            "merges": float((np.bincount(pred_ids[most_of_ref]) >= 2).sum()),
            "splits": float((np.bincount(ref_ids[most_of_pred]) >= 2).sum())}


def instance_metrics(reference: np.ndarray, prediction: np.ndarray,
                     scores: Mapping[int, float] | None = None) -> dict[str, float]:
    """F1@0.5, scored AP-50 and AP-75, VOI split/merge, ARI, the object counts and the kinds of errors of two
    instance label volumes (pass `connected_instances(mask)` for semantic masks)."""
    ious, n_ref, n_pred = match_instances(reference, prediction)
    tp = float((ious >= 0.5).sum())
    split, merge = variation_of_information(reference, prediction)
    return {"reference_instances": float(n_ref), "predicted_instances": float(n_pred),
            "f1_50": 1.0 if n_ref == n_pred == 0 else 2 * tp / (n_ref + n_pred),
            "ap_50": average_precision(reference, prediction, scores, 0.5),
            "ap_75": average_precision(reference, prediction, scores, 0.75),
            "voi_split": split, "voi_merge": merge, "ari": adjusted_rand_index(reference, prediction),
            **object_errors(reference, prediction)}
