"""Boxes of nnU-Net v1's whole-volume resampling, computed from boxes of the input, equal nnU-Net's own result."""
from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from reisoseg.inference.resampling import axis_maps, resample_back, resample_box


def _smooth(shape, seed):
    rng = np.random.default_rng(seed)
    return (gaussian_filter(rng.normal(size=shape), 1.5) * 40 + 100).astype(np.float32)


@pytest.mark.parametrize("shape, spacing, target, separate", [
    ((12, 70, 66), (40, 10, 10), (40, 5, 5), 0),  # in-plane upsampling, z kept
    ((10, 50, 44), (50, 4.6, 4.6), (40, 5, 5), 0),  # z by nearest section, in-plane downsampling
    ((20, 30, 28), (6, 6, 6), (5, 5, 5), None),  # isotropic: one 3D spline
])
def test_boxes_equal_nnunet_resampling_both_ways(shape, spacing, target, separate):
    from nnunet.preprocessing.preprocessing import resample_data_or_seg, resample_patient

    volume = _smooth(shape, 0)
    with contextlib.redirect_stdout(io.StringIO()):
        whole, _ = resample_patient(volume[None], None, np.array(spacing), np.array(target), 3, 0,
                                    force_separate_z=None, order_z_data=0, order_z_seg=0,
                                    separate_z_anisotropy_threshold=3)
    whole = whole[0]
    maps = axis_maps(shape, spacing, target, separate)
    assert tuple(m.target for m in maps) == whole.shape
    box = [(whole.shape[0] // 4, whole.shape[0] - 2), (10, whole.shape[1] - 7), (0, whole.shape[2] // 2)]
    source = [m.source_range(lo, hi) for m, (lo, hi) in zip(maps, box)]
    clip = (volume.min(axis=(1, 2)), volume.max(axis=(1, 2))) if separate == 0 else (volume.min(), volume.max())
    part = resample_box(volume[tuple(slice(a, b) for a, b in source)], [a for a, _ in source], maps, box, clip)
    np.testing.assert_allclose(part, whole[tuple(slice(a, b) for a, b in box)], atol=1e-4)

    probabilities = np.stack([gaussian_filter(np.random.default_rng(1).random(whole.shape), 2)] * 2)
    axis = np.array([0]) if separate == 0 else None
    with contextlib.redirect_stdout(io.StringIO()):
        back = resample_data_or_seg(probabilities, shape, False, axis, 1, separate == 0, 0)
    out_box = [(1, shape[0] - 1), (5, shape[1] - 3), (shape[2] // 3, shape[2])]
    needed = [m.target_range_for_linear(lo, hi) for m, (lo, hi) in zip(maps, out_box)]
    part_back = resample_back(probabilities[(slice(None), *(slice(a, b) for a, b in needed))],
                              [a for a, _ in needed], maps, out_box)
    np.testing.assert_allclose(part_back, back[(slice(None), *(slice(a, b) for a, b in out_box))], atol=1e-6)
