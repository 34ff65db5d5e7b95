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

from dataclasses import dataclass
from typing import Mapping

import cc3d
import numpy as np


def connected_instances(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """Label 3D connected components of a boolean mask (26-connectivity by default)."""
    return cc3d.connected_components(np.ascontiguousarray(mask.astype(np.uint8)), connectivity=connectivity)


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(original object ids, the volume's ids renumbered 1..N in increasing order of the original ids)."""
    ids, inverse = np.unique(labels, return_inverse=True)
    if ids[0] != 0:
        inverse = inverse + 1
    return ids[ids != 0], inverse.reshape(-1).astype(np.int64)


def _pair_count(counts: np.ndarray) -> float:
    return float((counts * (counts - 1) / 2).sum())


@dataclass(frozen=True)
class Overlap:
    """The contingency table of two instance label volumes, computed in one pass over the voxels: every metric of
    this module reads it. Ids are compact (1..N, 0 the background); `pred_original` and `ref_original` map them back
    (id i is `pred_original[i - 1]`)."""

    ref_ids: np.ndarray  # one entry per (reference, prediction) pair that shares voxels, background included
    pred_ids: np.ndarray
    counts: np.ndarray  # voxels the pair shares
    ref_sizes: np.ndarray  # voxels per reference id (index = id)
    pred_sizes: np.ndarray
    pred_original: np.ndarray
    ref_original: np.ndarray

    @classmethod
    def of(cls, reference: np.ndarray, prediction: np.ndarray) -> Overlap:
        ref_original, ref = _compact(reference)
        pred_original, pred = _compact(prediction)
        n_pred = pred_original.size
        pairs, counts = np.unique(ref * (n_pred + 1) + pred, return_counts=True)
        return cls(pairs // (n_pred + 1), pairs % (n_pred + 1), counts, np.bincount(ref),
                   np.bincount(pred, minlength=n_pred + 1), pred_original, ref_original)

    def keeping(self, kept: np.ndarray) -> Overlap:
        """The table after the predicted objects not in `kept` (a mask over compact ids 1..N) became background:
        what a cut on size or score does, without a pass over the voxels."""
        new_id = np.zeros(self.n_pred + 1, np.int64)
        new_id[1:][kept] = np.arange(1, int(kept.sum()) + 1)
        n_kept = int(kept.sum())
        pairs, inverse = np.unique(self.ref_ids * (n_kept + 1) + new_id[self.pred_ids], return_inverse=True)
        counts = np.bincount(inverse.reshape(-1), weights=self.counts).astype(np.int64)
        pred_sizes = np.bincount(new_id, weights=self.pred_sizes, minlength=n_kept + 1).astype(np.int64)
        return Overlap(pairs // (n_kept + 1), pairs % (n_kept + 1), counts, self.ref_sizes, pred_sizes,
                       self.pred_original[kept], self.ref_original)

    @property
    def n_ref(self) -> int:
        return self.ref_sizes.size - 1

    @property
    def n_pred(self) -> int:
        return self.pred_sizes.size - 1

    def objects(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(reference id, prediction id, voxels in common) of the pairs of two objects."""
        both = (self.ref_ids > 0) & (self.pred_ids > 0)
        return self.ref_ids[both], self.pred_ids[both], self.counts[both]

    def ious(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ref_ids, pred_ids, intersections = self.objects()
        return ref_ids, pred_ids, intersections / (self.ref_sizes[ref_ids] + self.pred_sizes[pred_ids]
                                                   - intersections)

    def matched_ious(self) -> np.ndarray:
        """IoUs of a greedy one-to-one matching by decreasing IoU."""
        ref_ids, pred_ids, ious = self.ious()
        used_ref, used_pred, matched = set(), set(), []
        for index in np.argsort(-ious, kind="stable"):
            r, p = int(ref_ids[index]), int(pred_ids[index])
            if r not in used_ref and p not in used_pred:
                used_ref.add(r)
                used_pred.add(p)
                matched.append(float(ious[index]))
        return np.array(matched)

    def average_precision(self, scores: Mapping[int, float] | None, threshold: float) -> float:
        """AP at an IoU threshold; `scores` maps original prediction ids to scores (see module doc)."""
        if self.n_ref == 0:
            return 1.0 if self.n_pred == 0 else 0.0
        if self.n_pred == 0:
            return 0.0
        score = np.array([(scores or {}).get(int(i), 1.0) for i in self.pred_original])
        candidates: dict[int, list[tuple[float, int]]] = {}
        for r, p, iou in zip(*self.ious()):
            if iou >= threshold:
                candidates.setdefault(int(p), []).append((float(iou), int(r)))
        used, hits = set(), []
        for p in np.argsort(-score, kind="stable") + 1:
            best = max(((iou, r) for iou, r in candidates.get(int(p), []) if r not in used), default=None)
            hits.append(best is not None)
            if best is not None:
                used.add(best[1])
        tp = np.cumsum(hits)
        precision, recall = tp / np.arange(1, len(hits) + 1), tp / self.n_ref
        envelope = np.maximum.accumulate(precision[::-1])[::-1]
        return float(np.sum(np.diff(np.concatenate([[0.0], recall])) * envelope))

    def variation_of_information(self) -> tuple[float, float]:
        """(split, merge) in bits: H(prediction | reference) and H(reference | prediction)."""
        total = float(self.counts.sum())

        def entropy(counts: np.ndarray) -> float:
            p = counts[counts > 0] / total
            return float(-(p * np.log2(p)).sum())

        h_joint = entropy(self.counts)
        return h_joint - entropy(self.ref_sizes), h_joint - entropy(self.pred_sizes)

    def adjusted_rand_index(self) -> float:
        rows, columns = _pair_count(self.ref_sizes.astype(np.float64)), _pair_count(self.pred_sizes.astype(np.float64))
        expected = rows * columns / _pair_count(np.array([float(self.counts.sum())]))
        largest = (rows + columns) / 2
        return 1.0 if largest == expected else (_pair_count(self.counts.astype(np.float64)) - expected) / (
            largest - expected)

    def error_objects(self) -> dict[str, np.ndarray]:
        """Compact ids of the false, missed, merging (predicted) and split (reference) objects (see module doc)."""
        ref_ids, pred_ids, intersections = self.objects()
        ref_inside = np.bincount(ref_ids, weights=intersections, minlength=self.ref_sizes.size)
        pred_inside = np.bincount(pred_ids, weights=intersections, minlength=self.pred_sizes.size)
        most_of_ref = 2 * intersections > self.ref_sizes[ref_ids]  # the pair holds most of the reference object
        most_of_pred = 2 * intersections > self.pred_sizes[pred_ids]
        return {"false_objects": np.flatnonzero((2 * pred_inside < self.pred_sizes)[1:]) + 1,
                "missed_objects": np.flatnonzero((2 * ref_inside < self.ref_sizes)[1:]) + 1,
                "merges": np.flatnonzero(np.bincount(pred_ids[most_of_ref]) >= 2),
                "splits": np.flatnonzero(np.bincount(ref_ids[most_of_pred]) >= 2)}

    def errors(self) -> dict[str, float]:
        """Counts of false, missed, merged and split objects (see module doc)."""
        return {kind: float(ids.size) for kind, ids in self.error_objects().items()}


def match_instances(reference: np.ndarray, prediction: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Greedy one-to-one matching by decreasing IoU of two instance label volumes.

    Returns (IoUs of the matched pairs, number of reference instances, number of predicted instances).
    """
    overlap = Overlap.of(reference, prediction)
    return overlap.matched_ious(), overlap.n_ref, overlap.n_pred


def average_precision(reference: np.ndarray, prediction: np.ndarray, scores: Mapping[int, float] | None,
                      threshold: float) -> float:
    """AP at an IoU threshold of instance label volumes; `scores` maps prediction ids to scores (see module doc)."""
    return Overlap.of(reference, prediction).average_precision(scores, threshold)


def variation_of_information(reference: np.ndarray, prediction: np.ndarray) -> tuple[float, float]:
    return Overlap.of(reference, prediction).variation_of_information()


def adjusted_rand_index(reference: np.ndarray, prediction: np.ndarray) -> float:
    return Overlap.of(reference, prediction).adjusted_rand_index()


def object_errors(reference: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    return Overlap.of(reference, prediction).errors()


def instance_metrics(reference: np.ndarray, prediction: np.ndarray,
                     scores: Mapping[int, float] | None = None) -> dict[str, float]:
    """F1@0.5, scored AP-50 and AP-75, VOI split/merge, ARI, the object counts and the kinds of errors of two
    instance label volumes (pass `connected_instances(mask)` for semantic masks), from one `Overlap`."""
    return overlap_metrics(Overlap.of(reference, prediction), scores)


def overlap_metrics(overlap: Overlap, scores: Mapping[int, float] | None = None) -> dict[str, float]:
    """`instance_metrics` of a contingency table."""
    n_ref, n_pred = overlap.n_ref, overlap.n_pred
    tp = float((overlap.matched_ious() >= 0.5).sum())
    split, merge = overlap.variation_of_information()
    return {"reference_instances": float(n_ref), "predicted_instances": float(n_pred),
            "f1_50": 1.0 if n_ref == n_pred == 0 else 2 * tp / (n_ref + n_pred),
            "ap_50": overlap.average_precision(scores, 0.5), "ap_75": overlap.average_precision(scores, 0.75),
            "voi_split": split, "voi_merge": merge, "ari": overlap.adjusted_rand_index(), **overlap.errors()}
