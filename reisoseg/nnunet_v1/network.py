"""The networks as nnU-Net v1 trains them: an adapter that lets it drive the pure-torch ReIsoSegRMV6 (sliding window,
do_ds switching), and the baseline's Generic_UNet as a memory estimate sees it."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from nnunet.network_architecture.generic_UNet import Generic_UNet
from nnunet.network_architecture.initialization import InitWeights_He
from nnunet.network_architecture.neural_network import SegmentationNetwork
from torch import nn

from reisoseg.network import ReIsoSegRMV6, required_divisor
from reisoseg.network.memory import MemoryEstimate, step_memory


def _softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, 1)


class ReIsoSegV1Network(SegmentationNetwork):
    """`SegmentationNetwork` around `ReIsoSegRMV6`; `do_ds` maps to the network's deep-supervision switch.

    Inputs are moved to the network's device and outputs back to the input's device, so nnU-Net's predictor,
    which only knows CPU and CUDA, also drives a network on MPS.
    """

    def __init__(self, input_channels: int, num_classes: int, ani_scale: Sequence[int]):
        super().__init__()
        self.net = ReIsoSegRMV6(input_channels, num_classes, ani_scale, deep_supervision=True)
        self.conv_op = nn.Conv3d
        self.num_classes = num_classes
        self.input_shape_must_be_divisible_by = np.array(required_divisor(ani_scale))
        self.inference_apply_nonlin = _softmax

    @property
    def do_ds(self) -> bool:
        return self.net.deep_supervision

    @do_ds.setter
    def do_ds(self, enabled: bool) -> None:
        self.net.deep_supervision = bool(enabled)

    def forward(self, x: torch.Tensor):
        device = next(self.parameters()).device
        out = self.net(x.to(device))
        if x.device == device:
            return out
        return out.to(x.device) if isinstance(out, torch.Tensor) else tuple(o.to(x.device) for o in out)


def baseline_network(trainer) -> Generic_UNet:
    """The 3D Generic_UNet that `nnUNetTrainerV2.initialize_network` builds from `trainer`'s processed plans, on the
    current default device (the meta device for a memory estimate) and without moving it to a GPU."""
    return Generic_UNet(trainer.num_input_channels, trainer.base_num_features, trainer.num_classes,
                        len(trainer.net_num_pool_op_kernel_sizes), trainer.conv_per_stage, 2, nn.Conv3d,
                        nn.InstanceNorm3d, {"eps": 1e-5, "affine": True}, nn.Dropout3d, {"p": 0, "inplace": True},
                        nn.LeakyReLU, {"negative_slope": 1e-2, "inplace": True}, True, False, lambda x: x,
                        InitWeights_He(1e-2), trainer.net_num_pool_op_kernel_sizes, trainer.net_conv_kernel_sizes,
                        False, True, True)


def baseline_step_memory(trainer, patch_size: Sequence[int]) -> MemoryEstimate:
    """Peak memory of one training step of `trainer`'s Generic_UNet at `patch_size` and its batch size, estimated
    as for ReIsoSeg (reisoseg.network.memory)."""
    with torch.device("meta"):
        network = baseline_network(trainer)
        image = torch.zeros(trainer.batch_size, trainer.num_input_channels, *patch_size)
    return step_memory(network, lambda: network(image), mixed_precision=trainer.fp16)


def baseline_divisor(trainer) -> tuple[int, int, int]:
    """What Generic_UNet needs the patch divisible by: the product of its pooling kernels per axis."""
    return tuple(int(v) for v in np.prod(trainer.net_num_pool_op_kernel_sizes, axis=0))
