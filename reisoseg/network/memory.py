"""How much memory a training step needs, and the largest patch that fits a budget.

The estimate runs the network once on PyTorch's meta device (shapes only: nothing is computed or allocated), for
ReIsoSeg with both branches and the PI module, and counts the storage of every tensor autograd saves for the
backward pass. To that it adds the backward pass's working set (the gradients in flight, a fraction of the saved
activations), weights, gradients and SGD momentum, and the runtime's own overhead. The two constants are calibrated
against the peak resident memory of CPU training steps (`tests/network/test_memory.py` checks 25 % at other sizes
and patterns, `tests/nnunet_v1/test_trainers.py` for the baseline's Generic_UNet); with mixed precision the
activations are counted at half size, an assumption that `benchmarks/gpu_check.py` compares with CUDA's measured
peak.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from reisoseg.network.anisotropy import PatchDoesNotFit
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


def step_memory(network: torch.nn.Module, forward: Callable[[], object], *,
                mixed_precision: bool = False) -> MemoryEstimate:
    """Peak memory of one training step of `network`, built on the meta device, whose forward pass `forward` runs
    (on meta inputs): the storage autograd saves, the backward working set, parameter copies and the overhead."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage._cdata] = storage.nbytes()  # tensors sharing storage count once
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        forward()
    activations = sum(storages.values()) // (2 if mixed_precision else 1)
    parameters = PARAMETER_COPIES * sum(p.numel() * p.element_size() for p in network.parameters())
    return MemoryEstimate(activations, int(BACKWARD_WORKING_SET * activations), parameters, RUNTIME_OVERHEAD_BYTES)


def training_step_memory(patch_size: Sequence[int], batch_size: int, ani_scale: Sequence[int], *,
                         num_classes: int = 2, input_channels: int = 1,
                         mixed_precision: bool = False) -> MemoryEstimate:
    """Peak memory of one ReIsoSeg training step (forward of both branches, backward, SGD step)."""
    with torch.device("meta"):
        network = ReIsoSegRMV6(input_channels, num_classes, ani_scale, deep_supervision=True)
        image = torch.zeros(batch_size, input_channels, *patch_size, requires_grad=False)
    return step_memory(network, lambda: network(image, pi_choice=LARGEST_PI_CHOICE), mixed_precision=mixed_precision)


def fit_patch_to_memory(patch_size: Sequence[int], divisor: Sequence[int], spacing: Sequence[float],
                        budget_bytes: float, estimate: Callable[[tuple[int, int, int]], MemoryEstimate],
                        ) -> tuple[tuple[int, int, int], MemoryEstimate]:
    """The largest patch not above `patch_size` (a multiple of `divisor`, what the network needs) whose training
    step, as `estimate` gives it for a patch, fits `budget_bytes`; and that estimate.

    Like nnU-Net's planner, it shrinks the axis with the largest physical extent (voxels x spacing) one `divisor` step
    at a time. Activations scale about with the voxel count, so one meta pass predicts many steps; each prediction
    that fits is confirmed by a meta pass, and shrinking goes on from there if it does not. Raises PatchDoesNotFit
    when even the smallest patch, `divisor` itself, does not fit.
    """
    patch = [int(size) for size in patch_size]
    current = estimate(tuple(patch))
    while current.total > budget_bytes:
        per_voxel = (current.activations + current.backward) / math.prod(patch)
        fixed = current.parameters + current.overhead
        while fixed + per_voxel * math.prod(patch) > budget_bytes:
            shrinkable = [axis for axis in range(3) if patch[axis] > divisor[axis]]
            if not shrinkable:
                smallest = (fixed + per_voxel * math.prod(divisor)) / 2**30
                raise PatchDoesNotFit(f"no patch fits {budget_bytes / 2**30:.2f} GiB: the smallest the network "
                                      f"takes, {list(divisor)}, needs about {smallest:.2f} GiB")
            axis = max(shrinkable, key=lambda a: patch[a] * spacing[a])
            patch[axis] -= divisor[axis]
        current = estimate(tuple(patch))
    return tuple(patch), current
