"""Blockwise instance decoding against whole-volume decoding, and resuming after a crash in any pass."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from reisoseg.evaluation.instances import adjusted_rand_index
from reisoseg.inference import instances as blockwise
from reisoseg.inference.store import LABELS, PROBABILITIES, BlockStore
from reisoseg.inference.tiles import block_box
from reisoseg.instances.decode import decode_instances
from reisoseg.instances.target import InstanceSettings, instance_target
from tests.instances.conftest import SPACING, ellipsoid, probabilities_from

SHAPE, BLOCK = (24, 96, 96), (12, 48, 48)  # 8 blocks meeting at (12, 48, 48)
SETTINGS = InstanceSettings(instance_class=1, boundary_class=2, boundary_nm=10.0, min_volume_nm3=2e5)


@pytest.fixture(scope="module")
def probabilities():
    truth = np.zeros(SHAPE, np.uint32)
    objects = [((480, 240, 240), (300, 100, 200)),  # around the corner where the 8 blocks meet
               ((480, 240, 470), (250, 140, 100)),  # touches the first one across a block face
               ((300, 120, 100), (250, 140, 100)), ((700, 380, 300), (250, 140, 100))]
    for number, (center, radii) in enumerate(objects, start=1):
        truth[ellipsoid(SHAPE, center, radii) & (truth == 0)] = number
    assert truth[11:13, 47:49, 47:49].min() == 1
    return probabilities_from(instance_target(truth, SPACING), noise=0.6).astype(np.float16)


def _store(tmp_path, probabilities) -> BlockStore:
    store = BlockStore(tmp_path / "seg.zarr")
    store.open({"test": True}, overwrite=False)
    store.create({"settings": {"spacing": list(SPACING)}}, SHAPE, BLOCK, 3, True, blockwise.ARRAYS)
    store.array(PROBABILITIES)[:] = probabilities
    return store


def _sequential(function, job, pending, description):
    for index in pending:
        function(job, index)


@pytest.mark.parametrize("erosion_nm", [0.0, 25.0])  # 25 nm: seeds need 6 pixels and 2 sections of context
def test_blockwise_equals_whole_volume_decoding_across_an_eight_block_corner(tmp_path, probabilities, erosion_nm,
                                                                             capsys):
    settings = replace(SETTINGS, seed_erosion_nm=erosion_nm)
    whole, whole_scores = decode_instances(probabilities.astype(np.float32), SPACING, settings)
    store = _store(tmp_path, probabilities)
    scores = blockwise.decode_blockwise(blockwise.InstanceJob(str(store.target), SHAPE, BLOCK, SPACING, settings),
                                        _sequential)
    labels = np.asarray(store.array(LABELS)[:])
    count = int(whole.max())
    assert count >= 4 and labels.max() == count and sorted(scores) == list(range(1, count + 1))
    assert adjusted_rand_index(whole, labels) >= 0.99
    assert sorted(scores.values()) == pytest.approx(sorted(whole_scores.values()), abs=1e-3)  # a few tied voxels
    assert np.unique(labels[11:13, 47:49, 47:49]).size == 1  # one id on all 8 sides of the corner
    assert "warning" not in capsys.readouterr().err  # boundaries between objects: halving the halo moves only ties


def test_a_flat_boundary_map_is_reported_as_halo_sensitive(tmp_path, capsys):
    """Everything foreground with one boundary probability (a model early in training): the watershed's tie order,
    not the landscape, decides which seed a voxel joins, so it depends on how far each block sees."""
    flat = np.zeros((3, *SHAPE), np.float32)
    flat[1], flat[2] = 0.3, 0.7
    for z, y, x in [(3, 10, 10), (20, 85, 20), (3, 60, 85), (20, 30, 60)]:  # farther apart than the halo
        flat[:, z:z + 2, y:y + 2, x:x + 2] = np.array([0.0, 0.95, 0.05])[:, None, None, None]
    store = _store(tmp_path, flat.astype(np.float16))
    job = blockwise.InstanceJob(str(store.target), SHAPE, BLOCK, SPACING, SETTINGS)
    blockwise.decode_blockwise(job, _sequential)
    assert np.asarray(store.array(LABELS)[:]).max() == 4
    sensitive = [json.loads(store.marker(index, blockwise.OBJECTS))["halo_sensitive"] for index in job.indices()]
    assert sum(sensitive) > blockwise.HALO_TOLERANCE * np.prod(SHAPE)
    err = capsys.readouterr().err
    assert err.startswith(f"reisoseg: warning: {sum(sensitive)} voxels (")
    assert f"in {sum(map(bool, sensitive))} of 8 blocks changed object" in err
    most, worst = max(zip(sensitive, job.indices()))
    (z0, z1), (y0, y1), (x0, x1) = block_box(worst, SHAPE, BLOCK)
    assert f"(most, {most}, in the block at z {z0}-{z1}, y {y0}-{y1}, x {x0}-{x1})" in err
    assert err.count("\n") == 1 and "--instance_halo" in err


@pytest.mark.parametrize("crash_in", ["seeds", "objects", "relabel"])
def test_a_crash_in_any_pass_resumes_to_the_same_objects(tmp_path, probabilities, crash_in):
    reference = _store(tmp_path / "reference", probabilities)
    job = blockwise.InstanceJob(str(reference.target), SHAPE, BLOCK, SPACING, SETTINGS)
    expected_scores = blockwise.decode_blockwise(job, _sequential)
    expected = np.asarray(reference.array(LABELS)[:])

    store = _store(tmp_path / "crashed", probabilities)
    job = blockwise.InstanceJob(str(store.target), SHAPE, BLOCK, SPACING, SETTINGS)

    def crashing(function, job, pending, description):
        if description == crash_in:
            function(job, pending[0])
            function(job, pending[1])
            raise KeyboardInterrupt
        _sequential(function, job, pending, description)

    with pytest.raises(KeyboardInterrupt):
        blockwise.decode_blockwise(job, crashing)
    assert len(store.finished(crash_in)) == 2
    ran = []
    scores = blockwise.decode_blockwise(job, lambda f, j, pending, d: (ran.append((d, len(pending))),
                                                                       _sequential(f, j, pending, d)))
    assert dict(ran)[crash_in] == 6  # only the unfinished blocks of that pass ran again
    np.testing.assert_array_equal(np.asarray(store.array(LABELS)[:]), expected)
    assert scores == pytest.approx(expected_scores)
