"""ReIsoSegRMV6: the residual anisotropic U-Net with the PI module and a weight-shared decoder
(documentation/method.md)."""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import nn

from reisoseg.network.anisotropy import check_input_shape, pi_z_factors, pool_kernel_sizes, validate_ani_scale
from reisoseg.network.blocks import ConvNormAct, ResBlock, init_he_
from reisoseg.network.pi_module import PIChoice, PIModule

FEATURES_PER_STAGE = (28, 36, 48, 64, 80)
EDGE_KERNEL = (1, 5, 5)  # first and last conv: in-plane only

NetworkOutput = Union[torch.Tensor, tuple[torch.Tensor, ...]]


class ReIsoSegRMV6(nn.Module):
    """ReIsoSeg network, pure PyTorch.

    With `deep_supervision` on, forward returns six logits, isotropic branch first:
    (iso full res after the last conv, iso full res before it, iso x2 level, ani the same three). With it off, it
    runs only the plain anisotropic encoder-decoder and returns the ani full-resolution logits; the PI branch is
    skipped, not computed and discarded as in the reference (documentation/method.md, difference 1). All heads
    always exist, so one state dict loads in both modes.

    Args:
        input_channels: image channels.
        num_classes: output classes, background included.
        ani_scale: pooling pattern, one entry per pooling stage 1-3 in {1, 2} (2 = in-plane only).
        deep_supervision: return all six heads (training) or only the plain-branch output (inference).

    Example:
        >>> net = ReIsoSegRMV6(1, 2, ani_scale=(1, 2, 2), deep_supervision=False)
        >>> net(torch.zeros(1, 1, 16, 64, 64)).shape
        torch.Size([1, 2, 16, 64, 64])
    """

    def __init__(self, input_channels: int, num_classes: int, ani_scale: Sequence[int] = (1, 1, 1),
                 deep_supervision: bool = True):
        super().__init__()
        self.ani_scale = validate_ani_scale(ani_scale)
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        f0, f1, f2, f3, f4 = FEATURES_PER_STAGE
        pools = pool_kernel_sizes(self.ani_scale)

        self.conv0 = ConvNormAct(input_channels, f0, EDGE_KERNEL)
        self.encoder = nn.ModuleList([ResBlock(f0, f0), ResBlock(f0, f1), ResBlock(f1, f2), ResBlock(f2, f3),
                                      ResBlock(f3, f4)])
        self.pools = nn.ModuleList(nn.MaxPool3d(k, stride=k) for k in pools)
        # Decoder, deepest first: up(k) then ResBlock on [upsampled, skip].
        self.ups = nn.ModuleList(nn.ConvTranspose3d(c_in, c_out, k, stride=k) for c_in, c_out, k in
                                 zip((f4, f3, f2, f1), (f3, f2, f1, f0), reversed(pools)))
        self.decoder = nn.ModuleList(ResBlock(2 * c, c) for c in (f3, f2, f1, f0))
        self.conv_last = ConvNormAct(f0, f0, EDGE_KERNEL)
        self.pi_module = PIModule((f1, f2, f3), pi_z_factors(self.ani_scale))
        self.heads = nn.ModuleList(nn.Conv3d(c, num_classes, 1, bias=False) for c in (f0, f0, f1, f0, f0, f1))
        self.apply(init_he_)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features [x1, x2, x3, x4, x5] (full resolution to bottleneck)."""
        features = [self.encoder[0](self.conv0(x))]
        for pool, block in zip(self.pools, self.encoder[1:]):
            features.append(block(pool(features[-1])))
        return features

    def decode(self, bottleneck: torch.Tensor, skips: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Shared decoder; `skips` deepest first (x4, x3, x2, x1). Returns (x10, x9, x8): the three DS levels."""
        x = bottleneck
        levels = []
        for up, block, skip in zip(self.ups, self.decoder, skips):
            x = block(torch.cat([up(x), skip], 1))
            levels.append(x)
        return self.conv_last(x), levels[3], levels[2]

    def forward(self, x: torch.Tensor, pi_choice: PIChoice | None = None,
                generator: torch.Generator | None = None) -> NetworkOutput:
        """x: (B, C, Z, Y, X). `pi_choice`/`generator` control the PI module's randomness (deep supervision only)."""
        check_input_shape(x.shape[2:], self.ani_scale)
        x1, x2, x3, x4, x5 = self.encode(x)
        ani = self.decode(x5, (x4, x3, x2, x1))
        if not self.deep_supervision:
            return self.heads[3](ani[0])
        skip2, skip3, skip4 = self.pi_module(x2, x3, x4, choice=pi_choice, generator=generator)
        iso = self.decode(x5, (skip4, skip3, skip2, x1))
        return tuple(head(level) for head, level in zip(self.heads, iso + ani))
