"""Decoding calibrated on validation cases: the grid point a hand-made validation set makes best, stored with the
model."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from reisoseg.instances.calibration import (
    CalibrationGrid,
    ValidationCase,
    calibrate,
    store_calibration,
    uncalibrated_settings,
)
from reisoseg.instances.target import InstanceSettings, model_instance_settings
from tests.instances.conftest import SPACING, ellipsoid

TRAINED = InstanceSettings(instance_class=1, boundary_class=2, boundary_nm=10.0, min_volume_nm3=2e5)
GRID = CalibrationGrid(seed_thresholds=(0.3, 0.5, 0.7), seed_erosions_nm=(0.0,), min_volume_factors=(1.0,),
                       min_scores=(0.0, 0.7, 0.9))


def _validation_case(seed: int) -> ValidationCase:
    """Two objects joined by a neck whose interior probability is 0.4 (seeds at 0.3 merge them), and a faint false
    object of foreground probability 0.65 (a minimum score of 0.7 drops it; 0.9 drops nothing more)."""
    shape = (10, 100, 100)
    left = ellipsoid(shape, (200, 150, 120), (160, 100, 90))
    right = ellipsoid(shape, (200, 150, 320), (160, 100, 90))
    neck = np.zeros(shape, bool)
    neck[3:7, 25:35, 40:46] = True
    faint = ellipsoid(shape, (200, 400, 250), (80, 40, 40))
    probabilities = np.zeros((3, *shape), np.float32)
    probabilities[0] = 1.0
    for mask, values in ((left | right, (0.02, 0.96, 0.02)), (neck, (0.05, 0.4, 0.55)),
                         (faint, (0.35, 0.6, 0.05))):
        probabilities[:, mask] = np.array(values, np.float32)[:, None]
    reference = left.astype(np.uint32) + 2 * right
    return ValidationCase(f"case_{seed}", probabilities, SPACING, reference)


def test_calibration_picks_the_grid_point_the_validation_set_makes_best():
    cases = [_validation_case(0), _validation_case(1)]
    calibration = calibrate(cases, TRAINED, GRID)
    assert (calibration.settings.seed_threshold, calibration.settings.min_score) == (0.5, 0.7)
    assert calibration.before["false_objects"] == 1.0 and calibration.after["false_objects"] == 0.0
    assert calibration.after["f1_50"] == 1.0 and calibration.before["f1_50"] == pytest.approx(0.8)
    assert calibration.points == 9 and calibration.cases == ("case_0", "case_1")  # the trained point is on the grid
    merged = calibrate(cases, TRAINED, replace(GRID, seed_thresholds=(0.3,), min_scores=(0.0,)))
    assert merged.after["merges"] == 0.0 and merged.settings == TRAINED  # 0.3 merges: the trained settings stay


def test_the_choice_is_stored_with_the_model_and_a_second_calibration_starts_from_the_trained_settings(tmp_path):
    (tmp_path / "instances.json").write_text(json.dumps({**TRAINED.to_dict(), "training_objects": 12}))
    calibration = calibrate([_validation_case(0)], TRAINED, GRID)
    store_calibration(tmp_path, calibration)
    stored = json.loads((tmp_path / "instances.json").read_text())
    assert model_instance_settings(tmp_path) == calibration.settings
    assert stored["calibration"]["before"]["f1_50"] == pytest.approx(0.8) and stored["training_objects"] == 12
    assert uncalibrated_settings(tmp_path) == TRAINED
    store_calibration(tmp_path, calibrate([_validation_case(0)], uncalibrated_settings(tmp_path), GRID))
    assert uncalibrated_settings(tmp_path) == TRAINED
