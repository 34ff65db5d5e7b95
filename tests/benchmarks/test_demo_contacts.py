"""The demo-contact analysis: touching pairs and their faces, contact intensities, and the merged-groups ceiling."""
from __future__ import annotations

import numpy as np

from tests.benchmarks import load_benchmark


def _stacked_pair_and_a_loner() -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((6, 12, 24), np.int64)
    ids[1:3, 2:10, 2:10], ids[3:5, 2:10, 2:10] = 1, 2  # stacked: they touch across sections 2 | 3
    ids[1:5, 2:10, 14:22] = 3  # alone
    image = np.full(ids.shape, 100.0, np.float32)
    image[ids > 0] = 20.0
    image[2:4, 2:10, 2:10] = 12.0  # the two contact sections, darker than the interiors
    return ids, image


def test_touching_objects_faces_and_contact_intensity():
    contacts = load_benchmark("demo_contacts")
    ids, image = _stacked_pair_and_a_loner()
    found = contacts._analyse(ids, image)
    assert found["objects"] == 3
    assert found["touching_pairs"] == {"1-2": {"faces_across_sections": 64, "faces_in_plane": 0, "contrast": 8.0,
                                               "hidden": False}}
    assert found["intensity"] == {"z_contacts": 12.0, "in_plane_contacts": None, "inside": 20.0, "background": 100.0}


def test_a_contact_no_darker_than_the_interiors_hides_its_interface():
    contacts = load_benchmark("demo_contacts")
    ids, image = _stacked_pair_and_a_loner()
    image[2:4, 2:10, 2:10] = 20.0
    found = contacts._analyse(ids, image)
    assert found["touching_pairs"]["1-2"]["contrast"] == 0.0 and contacts._hidden_pairs(found) == {(1, 2)}


def test_touching_objects_become_one_object_where_joined():
    contacts = load_benchmark("demo_contacts")
    ids, _ = _stacked_pair_and_a_loner()
    merged = contacts._groups_merged(ids)
    assert merged[1, 5, 5] == merged[4, 5, 5] != merged[1, 5, 15] > 0
    assert len(np.unique(merged[merged > 0])) == 2 and (merged[ids == 0] == 0).all()
    apart = contacts._groups_merged(ids, joined=set())
    assert len({apart[1, 5, 5], apart[4, 5, 5], apart[1, 5, 15]}) == 3


def test_a_touching_pair_is_kept_apart_only_where_its_objects_land_in_different_predicted_objects():
    contacts = load_benchmark("demo_contacts")
    ids, _ = _stacked_pair_and_a_loner()
    pairs = [(1, 2), (1, 3)]
    assert contacts.kept_apart(ids, ids.astype(np.uint32), pairs) == {"1-2": True, "1-3": True}
    merged = contacts._groups_merged(ids).astype(np.uint32)
    assert contacts.kept_apart(ids, merged, pairs) == {"1-2": False, "1-3": True}
    missed = np.where(ids == 3, 0, ids).astype(np.uint32)
    missed[1, 2, 2] = 7  # a stray voxel of another object does not decide which object holds object 1
    assert contacts.kept_apart(ids, missed, pairs) == {"1-2": True, "1-3": None}


def test_a_pairs_contact_is_the_voxels_of_either_object_facing_the_other():
    contacts = load_benchmark("demo_contacts")
    ids, _ = _stacked_pair_and_a_loner()
    contact = contacts.pair_contact(ids, 1, 2)
    assert contact[2:4, 2:10, 2:10].all() and contact.sum() == 128  # sections 2 and 3 under the pair
    assert not contacts.pair_contact(ids, 1, 3).any()


def test_seeds_of_a_pair_are_shared_separate_or_missing_for_one():
    contacts = load_benchmark("demo_contacts")
    ids, _ = _stacked_pair_and_a_loner()
    seeds = np.zeros(ids.shape, np.uint32)
    seeds[1, 4:6, 4:6], seeds[4, 4:6, 4:6] = 1, 2
    assert contacts.seeding(ids, seeds, 1, 2) == "separate"
    seeds[2:4, 4:6, 4:6] = 1  # the first seed grows through the contact
    assert contacts.seeding(ids, seeds, 1, 2) == "shared"
    seeds[ids == 2] = 0
    assert contacts.seeding(ids, seeds, 1, 2) == "unseeded"
