import numpy as np
import pytest

from reisoseg.evaluation.metrics import overlap_metrics, per_class_metrics


def test_identical_disjoint_and_empty():
    a = np.zeros((4, 8, 8), bool)
    a[1:3, 2:6, 2:6] = True
    assert overlap_metrics(a, a) == {"dice": 1.0, "iou": 1.0, "precision": 1.0, "recall": 1.0}
    b = np.roll(a, 4, axis=2)
    assert overlap_metrics(a, b)["dice"] == 0.0
    empty = np.zeros_like(a)
    assert overlap_metrics(empty, empty)["dice"] == 1.0
    assert overlap_metrics(a, empty) == {"dice": 0.0, "iou": 0.0, "precision": 0.0, "recall": 0.0}


def test_half_overlap_values():
    ref = np.zeros((1, 1, 4), bool)
    pred = np.zeros((1, 1, 4), bool)
    ref[..., :2] = True
    pred[..., 1:3] = True
    metrics = overlap_metrics(ref, pred)
    assert metrics["dice"] == pytest.approx(0.5) and metrics["iou"] == pytest.approx(1 / 3)


def test_per_class_and_shape_mismatch():
    ref = np.array([[[0, 1, 2, 2]]])
    pred = np.array([[[0, 1, 1, 2]]])
    result = per_class_metrics(ref, pred, {0: "background", 1: "mito", 2: "syn"})
    assert set(result) == {"mito", "syn"} and result["mito"]["dice"] == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="shape mismatch"):
        overlap_metrics(np.zeros((2, 2)), np.zeros((2, 3)))
