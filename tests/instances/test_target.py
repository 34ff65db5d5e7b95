"""The instance target: boundary measured in nm, z-faces against background interior, z-contacts boundary."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reisoseg.instances.target import instance_target, model_instance_settings, training_settings


def test_in_plane_boundary_width_is_in_nanometres():
    ids = np.zeros((3, 1, 20), np.uint32)
    ids[:, :, 2:18] = 1
    thin = instance_target(ids, (40, 5, 5), boundary_nm=5)
    wide = instance_target(ids, (40, 5, 5), boundary_nm=10)
    assert thin[1, 0].tolist() == [0, 0, 2] + [1] * 14 + [2, 0, 0]
    assert wide[1, 0].tolist() == [0, 0, 2, 2] + [1] * 12 + [2, 2, 0, 0]


def test_z_faces_against_background_stay_interior_when_sections_are_thick():
    ids = np.zeros((5, 13, 13), np.uint32)
    ids[1:4, 1:12, 1:12] = 1
    anisotropic = instance_target(ids, (40, 5, 5))  # default width: two pixels = 10 nm < 40 nm
    assert (anisotropic[1, 3:10, 3:10] == 1).all() and (anisotropic[3, 3:10, 3:10] == 1).all()
    assert (anisotropic[2, 1:3, 1:12] == 2).all()  # in-plane: two pixels of boundary
    isotropic = instance_target(ids, (5, 5, 5))  # the same object at 5 nm sections: its z-faces are boundary
    assert (isotropic[1, 3:10, 3:10] == 2).all() and (isotropic[3, 3:10, 3:10] == 2).all()


def test_objects_touching_along_z_are_separated_by_boundary():
    ids = np.zeros((6, 9, 9), np.uint32)
    ids[0:3, 1:8, 1:8] = 1
    ids[3:6, 1:8, 1:8] = 2
    target = instance_target(ids, (40, 5, 5))
    assert (target[2, 3:6, 3:6] == 2).all() and (target[3, 3:6, 3:6] == 2).all()
    assert (target[1, 3:6, 3:6] == 1).all() and (target[4, 3:6, 3:6] == 1).all()


def test_training_settings_derive_the_minimum_volume_and_travel_with_the_model(tmp_path):
    record = training_settings([1e6, 2e6, 3e6, 4e6, 100e6], (40, 5, 5))
    assert record["min_volume_nm3"] == pytest.approx(0.5 * np.percentile([1e6, 2e6, 3e6, 4e6, 100e6], 10))
    assert record["boundary_nm"] == 10 and record["training_objects"] == 5
    (tmp_path / "instances.json").write_text(json.dumps(record))
    settings = model_instance_settings(tmp_path)
    assert settings.min_volume_nm3 == record["min_volume_nm3"] and settings.boundary_class == 2
    assert model_instance_settings(tmp_path / "elsewhere") is None
    with pytest.raises(ValueError, match="no objects"):
        training_settings([], (40, 5, 5))
