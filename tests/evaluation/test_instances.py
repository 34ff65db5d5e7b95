"""Scored AP, VOI, ARI and the kinds of object errors against hand computations."""
from __future__ import annotations

import math

import numpy as np
import pytest

from reisoseg.evaluation.instances import (
    Overlap,
    adjusted_rand_index,
    average_precision,
    instance_metrics,
    object_errors,
    overlap_metrics,
    variation_of_information,
)
from reisoseg.evaluation.report import evaluate
from reisoseg.instances.scores import write_scores
from reisoseg.io.volume import write_volume


def _objects() -> tuple[np.ndarray, np.ndarray]:
    """Three reference objects (10 voxels each, in a row); four predictions:
    id 4 = object A exactly, id 9 = 8 voxels of B (IoU 0.8), id 2 = 6 voxels of C (IoU 0.6), id 7 = a false one."""
    reference, prediction = np.zeros((1, 1, 60), np.uint16), np.zeros((1, 1, 60), np.uint16)
    reference[0, 0, 0:10], reference[0, 0, 10:20], reference[0, 0, 20:30] = 1, 2, 3
    prediction[0, 0, 0:10], prediction[0, 0, 10:18], prediction[0, 0, 20:26] = 4, 9, 2
    prediction[0, 0, 40:50] = 7
    return reference, prediction


def test_ap_with_scores_matches_a_hand_computation():
    reference, prediction = _objects()
    scores = {4: 0.9, 7: 0.8, 9: 0.7, 2: 0.6}
    # ranked 4 (TP), 7 (FP), 9 (TP), 2 (TP at 0.5): precision 1, 1/2, 2/3, 3/4 at recall 1/3, 1/3, 2/3, 1;
    # envelope 1, 3/4, 3/4, 3/4 -> AP-50 = 1/3 * 1 + 1/3 * 3/4 + 1/3 * 3/4
    assert average_precision(reference, prediction, scores, 0.5) == pytest.approx(1 / 3 + 1 / 4 + 1 / 4)
    # at 0.75 object C's match (IoU 0.6) fails: TP, FP, TP, FP -> recall 1/3, 2/3 with envelope 1, 2/3
    assert average_precision(reference, prediction, scores, 0.75) == pytest.approx(1 / 3 + 1 / 3 * 2 / 3)
    # ranking the false object last removes its cost at 0.5
    assert average_precision(reference, prediction, {4: 0.9, 9: 0.7, 2: 0.6, 7: 0.1}, 0.5) == pytest.approx(1.0)
    assert average_precision(reference, np.zeros_like(prediction), None, 0.5) == 0.0
    assert average_precision(np.zeros_like(reference), np.zeros_like(prediction), None, 0.5) == 1.0


def test_voi_and_ari_by_hand():
    reference = np.zeros((1, 1, 8), np.uint8)
    reference[0, 0, 4:] = 1  # background 4 voxels, one object 4 voxels
    same = reference * 5
    assert variation_of_information(reference, same) == pytest.approx((0.0, 0.0))
    assert adjusted_rand_index(reference, same) == pytest.approx(1.0)
    split = reference.copy()
    split[0, 0, 6:] = 2  # the object predicted as two halves: H(pred | ref) = 1/2 bit, no merge
    assert variation_of_information(reference, split) == pytest.approx((0.5, 0.0))
    # ARI by hand: pairs within cells 6+1+1 = 8; rows 6+6 = 12; columns 6+1+1 = 8; all pairs 28
    expected = (8 - 12 * 8 / 28) / ((12 + 8) / 2 - 12 * 8 / 28)
    assert adjusted_rand_index(reference, split) == pytest.approx(expected)
    assert variation_of_information(split, reference) == pytest.approx((0.0, 0.5))


def test_object_errors_by_hand():
    reference, prediction = np.zeros((1, 1, 100), np.uint16), np.zeros((1, 1, 100), np.uint16)
    reference[0, 0, 0:10], reference[0, 0, 10:20] = 1, 2  # two touching objects ...
    prediction[0, 0, 0:20] = 5  # ... predicted as one: a merge
    reference[0, 0, 30:50] = 3  # one object ...
    prediction[0, 0, 30:40], prediction[0, 0, 40:50] = 6, 7  # ... predicted as two: a split
    reference[0, 0, 60:70] = 4  # an object with 3 of its 10 voxels predicted: missed, and its piece not false
    prediction[0, 0, 60:63] = 8
    prediction[0, 0, 80:90] = 9  # on background: false
    prediction[0, 0, 91:95] = 10  # 1 of 4 voxels on a reference object: false as well
    reference[0, 0, 94:100] = 11
    errors = object_errors(reference, prediction)
    assert errors == {"false_objects": 2.0, "missed_objects": 2.0, "merges": 1.0, "splits": 1.0}
    assert object_errors(reference, reference) == {"false_objects": 0.0, "missed_objects": 0.0, "merges": 0.0,
                                                   "splits": 0.0}
    nothing = object_errors(reference, np.zeros_like(prediction))
    assert nothing["missed_objects"] == 5.0 and nothing["false_objects"] == nothing["merges"] == 0.0


def test_evaluate_uses_instance_files_and_their_scores(tmp_path):
    reference, prediction = _objects()
    semantic = (reference > 0).astype(np.uint8)
    spacing = (40, 5, 5)
    for folder, volume in (("ref", semantic), ("pred", (prediction > 0).astype(np.uint8)),
                           ("ref_objects", reference), ("pred_objects", prediction)):
        (tmp_path / folder).mkdir()
        write_volume(tmp_path / folder / "case.nii.gz", volume, spacing)
    write_scores(tmp_path / "pred_objects" / "case.nii.gz", {4: 0.9, 7: 0.8, 9: 0.7, 2: 0.6})
    result = evaluate(tmp_path / "ref", tmp_path / "pred", classes={1: "mito"}, instance_classes=(1,),
                      reference_instances=tmp_path / "ref_objects", prediction_instances=tmp_path / "pred_objects")
    mito = result["per_case"]["case"]["mito"]
    assert mito["reference_instances"] == 3 and mito["predicted_instances"] == 4
    assert mito["ap_50"] == pytest.approx(1 / 3 + 1 / 4 + 1 / 4) and mito["f1_50"] == pytest.approx(6 / 7)
    connected = evaluate(tmp_path / "ref", tmp_path / "pred", classes={1: "mito"}, instance_classes=(1,))
    assert connected["per_case"]["case"]["mito"]["reference_instances"] == 1  # the three touch: one component
    assert not math.isnan(mito["voi_split"]) and 0 < mito["ari"] < 1
    assert mito["false_objects"] == 1 and mito["missed_objects"] == mito["merges"] == mito["splits"] == 0


def test_dropping_objects_from_the_table_equals_dropping_them_from_the_volume():
    """What calibration relies on: a cut applied to the contingency table scores as the cut volume does."""
    reference = np.zeros((4, 30, 30), np.uint32)
    reference[:, 2:12, 2:12], reference[:, 2:12, 16:28], reference[:, 18:28, 5:20] = 1, 2, 3
    prediction = np.zeros_like(reference)
    prediction[:, 3:12, 2:13], prediction[:, 2:12, 17:27] = 7, 9  # two matches
    prediction[:, 18:28, 5:12], prediction[:, 18:28, 12:20] = 11, 12  # a split
    prediction[:, 28:30, 0:4] = 15  # a false object
    scores = {7: 0.9, 9: 0.8, 11: 0.4, 12: 0.7, 15: 0.3}
    overlap = Overlap.of(reference, prediction)
    kept = np.array([True, True, False, True, False])  # compact ids follow the sorted original ids 7, 9, 11, 12, 15
    cut = np.where(np.isin(prediction, [7, 9, 12]), prediction, 0)
    assert overlap_metrics(overlap.keeping(kept), scores) == instance_metrics(reference, cut, scores)
    assert overlap_metrics(overlap.keeping(np.ones(5, bool)), scores) == instance_metrics(reference, prediction, scores)
