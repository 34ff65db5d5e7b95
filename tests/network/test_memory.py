"""The training-memory estimate against the measured peak of real CPU training steps, and patch fitting."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from reisoseg.network.anisotropy import required_divisor
from reisoseg.network.memory import MemoryEstimate, fit_patch_to_memory, training_step_memory

ROOT = Path(__file__).resolve().parents[2]

STEP = """
import json, sys, torch
from reisoseg.loss import ReIsoLoss
from reisoseg.network import ReIsoSegRMV6
from tests.memory_probe import peak_bytes
patch, pattern, batch = json.loads(sys.argv[1])
torch.set_num_threads(2)
network = ReIsoSegRMV6(1, 2, pattern)
optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
image = torch.randn(batch, 1, *patch)
target = (torch.rand(batch, *patch) > 0.5).long()
loss = ReIsoLoss(lambda logits, labels: torch.nn.functional.cross_entropy(
    logits, torch.nn.functional.interpolate(labels[:, None].float(), logits.shape[2:]).long()[:, 0]))


def step():
    loss(network(image), [target] * 6).backward()
    optimizer.step()


print(peak_bytes(step))
"""


@pytest.mark.parametrize("patch, pattern, batch", [
    ((8, 64, 64), (2, 2, 2), 2),
    pytest.param((16, 96, 96), (1, 2, 2), 1, marks=pytest.mark.slow),  # ~15 s; the suite's 15-minute budget
])
def test_estimate_is_within_a_quarter_of_a_measured_cpu_training_step(patch, pattern, batch):
    result = subprocess.run([sys.executable, "-c", STEP, json.dumps([patch, pattern, batch])], capture_output=True,
                            text=True, timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    measured = int(result.stdout.split()[-1])
    estimated = training_step_memory(patch, batch, pattern).total
    assert 0.75 <= estimated / measured <= 1.25, (estimated / 2**20, measured / 2**20)


def test_memory_grows_with_the_patch_and_the_batch_and_halves_activations_in_fp16():
    small = training_step_memory((8, 64, 64), 2, (2, 2, 2))
    assert training_step_memory((16, 64, 64), 2, (2, 2, 2)).activations == pytest.approx(2 * small.activations,
                                                                                         rel=0.02)
    assert training_step_memory((8, 64, 64), 4, (2, 2, 2)).activations == pytest.approx(2 * small.activations,
                                                                                        rel=0.02)
    assert training_step_memory((8, 64, 64), 2, (2, 2, 2), mixed_precision=True).activations == \
        small.activations // 2


def test_patch_is_fitted_to_the_budget():
    pattern, spacing, divisor = (2, 2, 2), (40.0, 5.0, 5.0), required_divisor((2, 2, 2))

    def estimate_at_batch_2(patch):
        return training_step_memory(patch, 2, pattern)

    planned = estimate_at_batch_2((16, 128, 128))
    patch, estimate = fit_patch_to_memory((16, 128, 128), divisor, spacing, planned.total * 1.01, estimate_at_batch_2)
    assert patch == (16, 128, 128) and estimate == planned  # fits already
    budget = planned.total / 3
    patch, estimate = fit_patch_to_memory((16, 128, 128), divisor, spacing, budget, estimate_at_batch_2)
    assert estimate.total <= budget and estimate == estimate_at_batch_2(patch)
    assert all(p <= q and p % d == 0 for p, q, d in zip(patch, (16, 128, 128), divisor))
    assert patch[1] < 128  # the axis that is physically longest shrinks first (16 x 40 nm = 640 < 128 x 5 nm)
    with pytest.raises(ValueError, match=r"no patch fits 0.01 GiB: the smallest the network takes, \[2, 16, 16\]"):
        fit_patch_to_memory((16, 128, 128), divisor, spacing, 0.01 * 2**30, estimate_at_batch_2)


def test_fitting_goes_on_where_the_voxel_count_underestimates_the_step():
    """A step whose memory grows faster than its voxel count at small patches: the fit confirms and keeps going."""
    def estimate(patch):
        voxels = math.prod(patch)
        activations = voxels * (2 if voxels < 4000 else 1)
        return MemoryEstimate(activations, 0, 0, 0)

    patch, fitted = fit_patch_to_memory((16, 16, 16), (1, 1, 1), (1.0, 1.0, 1.0), 3000, estimate)
    assert fitted.total <= 3000 and fitted == estimate(patch)  # the voxel count alone predicts 2816 voxels: 5632
