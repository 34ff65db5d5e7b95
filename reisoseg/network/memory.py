"""How much memory a ReIsoSeg training step needs, and the largest patch that fits a budget.

The estimate runs the network once on PyTorch's meta device (shapes only: nothing is computed or allocated), with
both branches and the PI module, and counts the storage of every tensor autograd saves for the backward pass. To
that it adds the backward pass's working set (the gradients in flight, a fraction of the saved activations),
weights, gradients and SGD momentum, and the runtime's own overhead. The two constants are calibrated against the
peak resident memory of CPU training steps (`tests/network/test_memory.py` checks 25 % at other sizes and
patterns); with mixed precision the activations are counted at half size, an assumption that
`benchmarks/gpu_check.py` compares with CUDA's measured peak.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from reisoseg.network.anisotropy import PatchDoesNotFit, fit_patch_size, required_divisor
from reisoseg.network.pi_module import PIChoice
from reisoseg.network.reisoseg_net import ReIsoSegRMV6

BACKWARD_WORKING_SET = 0.25  # gradients in flight during backward, as a fraction of the saved activations
RUNTIME_OVERHEAD_BYTES = 128 * 2**20  # allocator, thread pools and kernels' workspaces beyond the tensors
PARAMETER_COPIES = 3  # weights, their gradients, SGD momentum
# Every PI choice runs the PI Net on the same number of voxels; "x" mode also degrades an in-plane axis first, one
# saved resize more than "z" mode: the largest of the twelve
LARGEST_PI_CHOICE = PIChoice(0, "x")


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes of one training step, by part."""

    activations: int
    backward: int
    parameters: int
    overhead: int

    @property
    def total(self) -> int:
        return self.activations + self.backward + self.parameters + self.overhead

    @property
    def gib(self) -> float:
        return self.total / 2**30


def training_step_memory(patch_size: Sequence[int], batch_size: int, ani_scale: Sequence[int], *,
                         num_classes: int = 2, input_channels: int = 1,
                         mixed_precision: bool = False) -> MemoryEstimate:
    """Peak memory of one ReIsoSeg training step (forward of both branches, backward, SGD step)."""
    with torch.device("meta"):
        network = ReIsoSegRMV6(input_channels, num_classes, ani_scale, deep_supervision=True)
        image = torch.zeros(batch_size, input_channels, *patch_size, requires_grad=False)
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage._cdata] = storage.nbytes()  # tensors sharing storage count once
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        network(image, pi_choice=LARGEST_PI_CHOICE)
    activations = sum(storages.values()) // (2 if mixed_precision else 1)
    parameters = PARAMETER_COPIES * sum(p.numel() * p.element_size() for p in network.parameters())
    return MemoryEstimate(activations, int(BACKWARD_WORKING_SET * activations), parameters, RUNTIME_OVERHEAD_BYTES)


def fit_patch_to_memory(patch_size: Sequence[int], batch_size: int, ani_scale: Sequence[int],
                        spacing: Sequence[float], budget_bytes: float, *, num_classes: int = 2,
                        mixed_precision: bool = False) -> tuple[tuple[int, int, int], MemoryEstimate]:
    """The largest patch not above `patch_size` whose training step fits `budget_bytes`, and its estimate.

    Like nnU-Net's planner, it shrinks the axis with the largest physical extent (voxels x spacing) one step of
    what the pattern divides at a time; activations scale with the voxel count, so one meta pass sizes them all and
    a second confirms the result. Raises ValueError when even the smallest patch the pattern allows does not fit.
    """
    def estimate(patch: Sequence[int]) -> MemoryEstimate:
        return training_step_memory(patch, batch_size, ani_scale, num_classes=num_classes,
                                    mixed_precision=mixed_precision)

    patch = list(fit_patch_size(patch_size, ani_scale))
    first = estimate(patch)
    per_voxel = (first.activations + first.backward) / math.prod(patch)
    fixed = first.parameters + first.overhead
    divisor = required_divisor(ani_scale)
    while fixed + per_voxel * math.prod(patch) > budget_bytes:
        shrinkable = [axis for axis in range(3) if patch[axis] > divisor[axis]]
        if not shrinkable:
            smallest = (fixed + per_voxel * math.prod(divisor)) / 2**30
            raise PatchDoesNotFit(f"no patch fits {budget_bytes / 2**30:.2f} GiB at batch {batch_size}: the smallest "
                             f"for ani_scale {list(ani_scale)}, {list(divisor)}, needs about {smallest:.2f} GiB")
        axis = max(shrinkable, key=lambda a: patch[a] * spacing[a])
        patch[axis] -= divisor[axis]
    fitted = tuple(patch)
    return fitted, (first if fitted == tuple(fit_patch_size(patch_size, ani_scale)) else estimate(fitted))
