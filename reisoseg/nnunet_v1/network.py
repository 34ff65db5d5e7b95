"""Adapter that lets nnU-Net v1 drive the pure-torch ReIsoSegRMV6 (sliding window, do_ds switching)."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from nnunet.network_architecture.neural_network import SegmentationNetwork
from torch import nn

from reisoseg.network import ReIsoSegRMV6, required_divisor


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
