"""Block geometry, the streamed statistics pass and the resumable output store, without a model."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reisoseg.errors import ReIsoSegError
from reisoseg.inference.statistics import volume_statistics
from reisoseg.inference.store import BlockStore
from reisoseg.inference.tiles import block_box, block_indices


def test_blocks_tile_the_volume_exactly_once_when_they_do_not_divide_it():
    shape, block = (10, 33, 20), (4, 16, 20)
    covered = np.zeros(shape, dtype=int)
    for index in block_indices(shape, block):
        covered[tuple(slice(lo, hi) for lo, hi in block_box(index, shape, block))] += 1
    assert len(block_indices(shape, block)) == 3 * 3 * 1
    assert (covered == 1).all()


def test_streamed_statistics_equal_whole_volume_numpy_and_find_the_nonzero_box():
    rng = np.random.default_rng(0)
    data = np.zeros((12, 40, 30), dtype=np.float32)
    data[2:11, 5:37, 0:29] = rng.normal(100, 20, size=(9, 32, 29))
    data[5, 10, 10] = 0  # a zero inside the box still counts, as in nnU-Net's cropped normalisation
    stats = volume_statistics(data, "x", (5, 16, 16), nonzero_only=False)
    assert stats.bbox == ((2, 11), (5, 37), (0, 29))
    box = data[2:11, 5:37, 0:29].astype(np.float64)
    assert stats.mean == pytest.approx(box.mean(), rel=1e-9) and stats.std == pytest.approx(box.std(), rel=1e-9)
    masked = volume_statistics(data, "x", (5, 16, 16), nonzero_only=True)
    assert masked.mean == pytest.approx(data[data != 0].mean(), rel=1e-6)
    assert masked.voxels == int((data != 0).sum())


@pytest.mark.parametrize("data, fragment", [
    (np.full((4, 8, 8), 7, dtype=np.uint8), "constant image"),
    (np.where(np.arange(256).reshape(4, 8, 8) == 5, np.nan, 1.0).astype(np.float32), "NaN or Inf"),
    (np.zeros((0, 8, 8), dtype=np.uint8), "empty volume"),
    (np.ones((4, 8, 8), dtype=bool), "unsupported image dtype"),
])
def test_statistics_reject_unusable_volumes(data, fragment):
    with pytest.raises(ReIsoSegError, match=fragment):
        volume_statistics(data, "vol.zarr", (2, 8, 8), nonzero_only=False)


def test_store_resumes_same_settings_refuses_other_settings_and_renames_when_complete(tmp_path):
    target = tmp_path / "seg.zarr"
    settings = {"input": "a.zarr", "block": [2, 4, 4], "spacing": [40, 5, 5]}
    store = BlockStore(target)
    assert store.open(settings, overwrite=False) is None
    store.create({"settings": settings, "statistics": {}}, (3, 4, 8), (2, 4, 4), 2, True)
    store.array()[0:2, 0:4, 0:4] = 1
    store.mark_finished((0, 0, 0))
    assert BlockStore(target).open(settings, overwrite=False)["settings"] == settings
    assert BlockStore(target).finished() == {"0_0_0"}
    with pytest.raises(ReIsoSegError, match=r"unfinished run with other settings \(block\)"):
        BlockStore(target).open({**settings, "block": [3, 4, 4]}, overwrite=False)
    assert not target.exists()
    written = BlockStore(target).complete()
    assert written == target and not (tmp_path / "seg.zarr.partial").exists()
    import zarr

    group = zarr.open_group(str(target), mode="r")
    assert group["0"][:].sum() == 2 * 4 * 4 and group["probabilities"].shape == (2, 3, 4, 8)
    assert group.attrs["reisoseg"]["complete"] is True
    assert group.attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"] == [40, 5, 5]
    assert "image-label" in group.attrs
    with pytest.raises(ReIsoSegError, match="already exists"):
        BlockStore(target).open(settings, overwrite=False)
    assert json.loads(json.dumps(dict(group.attrs))) == dict(group.attrs)  # plain JSON metadata, nothing lost


def test_store_wants_a_zarr_name(tmp_path):
    with pytest.raises(ReIsoSegError, match="name it \\*.zarr"):
        BlockStore(tmp_path / "seg.tif")
