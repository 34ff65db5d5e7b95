"""Each EM defect on a hand-made volume: exactly the chosen section changes, in the way the transform says."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from reisoseg.augmentation import (
    BlurredSection,
    DefectedBatches,
    MisalignedSection,
    MissingSection,
    SectionContrast,
    em_defects,
)


def _batch():
    rng = np.random.default_rng(0)
    data = ndimage.gaussian_filter(rng.normal(size=(1, 1, 6, 32, 32)), (0, 0, 0, 2, 2)).astype(np.float32)
    data = (data - data.mean()) / data.std()
    seg = np.zeros((1, 1, 6, 32, 32), np.float32)
    seg[..., 10:20, 12:22] = 1
    return data, seg


def _apply(transform, seed=0):
    data, seg = _batch()
    np.random.seed(seed)
    out = transform(data=data.copy(), seg=seg.copy())
    changed = [z for z in range(6) if not np.array_equal(out["data"][0, 0, z], data[0, 0, z])]
    return data, seg, out["data"], out["seg"], changed


def test_a_missing_section_becomes_one_value_and_keeps_its_labels():
    data, seg, out, out_seg, changed = _apply(MissingSection(p_per_sample=1.0, max_sections=1))
    assert len(changed) == 1
    section = out[0, 0, changed[0]]
    assert np.ptp(section) == 0 and np.percentile(data[0, 0, changed[0]], 1) - 1e-6 <= section[0, 0]
    assert np.array_equal(out_seg, seg)


@pytest.mark.parametrize("seed", range(3))
def test_a_shifted_section_moves_its_labels_with_it(seed):
    data, seg, out, out_seg, changed = _apply(MisalignedSection(p_per_sample=1.0, max_sections=1, max_shift=4), seed)
    assert len(changed) == 1
    z = changed[0]
    shifts = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
              if np.array_equal(ndimage.shift(data[0, 0, z], (dy, dx), order=0, mode="nearest"), out[0, 0, z])]
    assert len(shifts) == 1 and shifts[0] != (0, 0)
    assert np.array_equal(out_seg[0, 0, z], ndimage.shift(seg[0, 0, z], shifts[0], order=0, mode="nearest"))
    others = [k for k in range(6) if k != z]
    assert np.array_equal(out_seg[0, 0, others], seg[0, 0, others]) and not np.array_equal(out_seg, seg)


def test_a_blurred_section_is_smoother_with_its_mean_and_labels_kept():
    data, seg, out, out_seg, changed = _apply(BlurredSection(p_per_sample=1.0, max_sections=1, sigma=(2.0, 2.0)))
    assert len(changed) == 1
    before, after = data[0, 0, changed[0]], out[0, 0, changed[0]]
    assert np.allclose(after, ndimage.gaussian_filter(before, 2.0))
    assert after.std() < 0.8 * before.std() and abs(after.mean() - before.mean()) < 0.05
    assert np.array_equal(out_seg, seg)


def test_a_contrast_jump_is_linear_within_its_ranges():
    transform = SectionContrast(p_per_sample=1.0, max_sections=2, contrast=(0.6, 0.7), brightness=(0.3, 0.4))
    data, seg, out, out_seg, changed = _apply(transform)
    assert 1 <= len(changed) <= 2
    for z in changed:
        slope, intercept = np.polyfit(data[0, 0, z].ravel(), out[0, 0, z].ravel(), 1)
        mean = data[0, 0, z].mean()
        assert 0.6 <= slope <= 0.7 and 0.3 - 1e-4 <= intercept - mean * (1 - slope) <= 0.4 + 1e-4
    assert np.array_equal(out_seg, seg)


def test_with_probability_zero_nothing_changes_and_the_set_has_four_defects():
    for transform in em_defects():
        transform.p_per_sample = 0.0
        assert _apply(transform)[4] == []
    assert [type(t).__name__ for t in em_defects()] == [
        "MissingSection", "MisalignedSection", "BlurredSection", "SectionContrast"]


def test_defected_batches_damage_the_loaders_batches_and_pass_the_worker_id_on():
    class Loader:
        thread_id = None

        def set_thread_id(self, thread_id):
            self.thread_id = thread_id

        def __next__(self):
            data = np.random.default_rng(0).normal(size=(2, 1, 6, 8, 8)).astype(np.float32)
            return {"data": data, "seg": np.zeros((2, 1, 6, 8, 8), np.float32)}

    loader = Loader()
    batches = DefectedBatches(loader, [MissingSection(p_per_sample=1.0, max_sections=1)])
    batches.set_thread_id(3)
    batch = next(iter(batches))
    assert loader.thread_id == 3
    blank = [sample.std(axis=(0, 2, 3)) == 0 for sample in batch["data"]]  # sections of one value, per sample
    assert [int(sections.sum()) for sections in blank] == [1, 1] and not batch["seg"].any()
