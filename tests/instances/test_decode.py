"""Decoding probabilities into objects: touching objects split, bent ones stay whole, speckles go."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from reisoseg.evaluation.instances import adjusted_rand_index
from reisoseg.instances.decode import decode_instances, seed_mask
from reisoseg.instances.target import InstanceSettings, instance_target
from tests.instances.conftest import SPACING, ellipsoid, probabilities_from

SETTINGS = InstanceSettings(instance_class=1, boundary_class=2, boundary_nm=10.0, min_volume_nm3=2e5)


def test_two_touching_ellipsoids_come_out_as_two_objects():
    shape = (24, 96, 96)
    first = ellipsoid(shape, (480, 240, 160), (300, 150, 110))
    second = ellipsoid(shape, (480, 240, 370), (300, 150, 110)) & ~first
    truth = first.astype(np.uint32) + 2 * second
    assert ((truth[:, :, 1:] == 1) & (truth[:, :, :-1] == 2) | (truth[:, :, 1:] == 2) & (truth[:, :, :-1] == 1)).any()
    assert np.unique(np.nonzero(first | second)[2]).size == np.ptp(np.nonzero(first | second)[2]) + 1  # one mask
    labels, scores = decode_instances(probabilities_from(instance_target(truth, SPACING), noise=0.4), SPACING,
                                      SETTINGS)
    assert labels.dtype == np.uint32 and labels.max() == 2 and sorted(scores) == [1, 2]
    assert adjusted_rand_index(truth, labels) > 0.98
    assert all(0.5 < s <= 1 for s in scores.values())


def test_one_bent_tube_stays_one_object():
    shape = (20, 120, 120)
    z, y, x = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, SPACING)], indexing="ij")
    radius = np.hypot(y - 300, x - 300)  # a half ring of tube radius 60 nm, bent through 180 degrees
    tube = (np.hypot(radius - 200, (z - 400) / 2) <= 60) & (x >= 300)
    labels, _ = decode_instances(probabilities_from(instance_target(tube.astype(np.uint32), SPACING), noise=0.4),
                                 SPACING, SETTINGS)
    assert labels.max() == 1
    assert (labels > 0).sum() >= 0.95 * tube.sum()


def test_speckles_below_the_minimum_volume_are_dropped():
    shape = (10, 60, 60)
    truth = ellipsoid(shape, (200, 150, 150), (160, 100, 100)).astype(np.uint32)
    truth[2, 5:7, 5:7] = 2  # 4 voxels = 4e3 nm³, far below the minimum
    labels, scores = decode_instances(probabilities_from(instance_target(truth, SPACING)), SPACING, SETTINGS)
    assert labels.max() == 1 and list(scores) == [1]
    assert labels[2, 5:7, 5:7].max() == 0


def test_objects_below_the_minimum_score_are_dropped():
    shape = (10, 60, 120)
    truth = ellipsoid(shape, (200, 150, 150), (160, 100, 100)).astype(np.uint32)
    faint = ellipsoid(shape, (200, 150, 450), (120, 60, 60))
    probabilities = probabilities_from(instance_target(truth, SPACING))
    probabilities[:, faint] = np.array([0.35, 0.6, 0.05], np.float32)[:, None]  # foreground 0.65
    labels, scores = decode_instances(probabilities, SPACING, SETTINGS)
    assert labels.max() == 2 and sorted(round(s, 2) for s in scores.values()) == [0.65, 1.0]
    labels, scores = decode_instances(probabilities, SPACING, replace(SETTINGS, min_score=0.7))
    assert labels.max() == 1 and labels[faint].max() == 0 and list(scores.values()) == [1.0]


def test_seeds_are_the_same_from_float16_and_float32_probabilities():
    """`segment` decodes its float16 store, calibration float32 copies of it: the threshold must cut both alike,
    also where a probability equals the threshold rounded to float16."""
    probabilities = np.zeros((3, 2, 4, 4), np.float16)
    probabilities[1] = np.float16(0.9)  # 0.8999..., below a threshold of 0.9
    probabilities[1, 1] = np.float16(0.95)
    probabilities[0] = 1 - probabilities[1]
    settings = replace(SETTINGS, seed_threshold=0.9)
    seeds = seed_mask(probabilities, settings, SPACING)
    assert np.array_equal(seeds, seed_mask(probabilities.astype(np.float32), settings, SPACING))
    assert not seeds[0].any() and seeds[1].all()
