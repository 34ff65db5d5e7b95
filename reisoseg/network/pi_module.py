"""The PI (pseudo-isotropic) module: the training-only "isotropic auxiliary branch".

It takes the encoder features x2, x3, x4, compresses their channels 4x, makes x2 and x3 pseudo-isotropic by nearest
z upsampling (sometimes also blurring one in-plane axis: "random artificial anisotropy"), swaps two axes at random,
runs a small U-Net of PI blocks (the PI Net), undoes the swap, squeezes z back and restores the channels. The
outputs replace x4, x3, x2 as skips of the shared decoder.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from reisoseg.network.blocks import PIBlock, ResBlock, nearest_resize

ARTIFICIAL_ANISOTROPY_PROBABILITY = 0.2
# Axis pairs (tensor dims) swapped by each permutation type; type 3 is the identity. Each is its own inverse.
SWAPS: tuple[tuple[int, int] | None, ...] = ((2, 4), (2, 3), (3, 4), None)
# In 'y' mode the degraded in-plane axis is tensor dim 3, in 'x' mode dim 4 (reference naming kept).
DEGRADED_DIM = {"y": 3, "x": 4}


@dataclass(frozen=True)
class PIChoice:
    """One forward call's random choices, shared by the whole batch and all three levels."""

    swap: int  # index into SWAPS
    mode: str  # 'z' (plain z upsampling), 'y' or 'x' (also degrade that in-plane axis)


def draw_pi_choice(generator: torch.Generator | None = None) -> PIChoice:
    """Draw the permutation (uniform over 4) and the resampling mode ('z' with p=0.8, else 'x'/'y' evenly).

    Uses torch's RNG (a deliberate difference from the reference's Python `random`), so seeding covers it.
    """
    swap = int(torch.randint(len(SWAPS), (1,), generator=generator))
    if float(torch.rand(1, generator=generator)) >= ARTIFICIAL_ANISOTROPY_PROBABILITY:
        return PIChoice(swap, "z")
    return PIChoice(swap, ("x", "y")[int(torch.randint(2, (1,), generator=generator))])


def pseudo_isotropic(x: torch.Tensor, z_factor: int, mode: str) -> torch.Tensor:
    """Nearest-upsample z by `z_factor`; in 'x'/'y' mode first make that in-plane axis blocky by the same factor."""
    z, y, w = x.shape[2:]
    if mode in DEGRADED_DIM:
        reduced = [z, y, w]
        reduced[DEGRADED_DIM[mode] - 2] //= z_factor
        x = nearest_resize(x, reduced)
    return nearest_resize(x, (z * z_factor, y, w))


def swap_axes(x: torch.Tensor, swap: int) -> torch.Tensor:
    """Apply permutation type `swap` (a single transposition, so applying it twice is the identity)."""
    dims = SWAPS[swap]
    return x if dims is None else x.transpose(*dims)


def squeeze_z(x: torch.Tensor, z_factor: int) -> torch.Tensor:
    """Nearest-downsample z by `z_factor` (keeps slices 0, s, 2s, ...), whatever the mode was."""
    z, y, w = x.shape[2:]
    return nearest_resize(x, (z // z_factor, y, w))


class PINet(nn.Module):
    """Three-level U-Net on the pseudo-isotropic grid with isotropic strided/transposed 2^3 convs and PI blocks."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        c2, c3, c4 = channels
        self.down1 = nn.Conv3d(c2, c3, 2, stride=2)
        self.conv1 = ResBlock(2 * c3, c3)
        self.down2 = nn.Conv3d(c3, c4, 2, stride=2)
        self.conv2 = ResBlock(2 * c4, c4)
        self.pi3 = PIBlock(c4)
        self.up1 = nn.ConvTranspose3d(c4, c3, 2, stride=2)
        self.pi2 = PIBlock(c3)
        self.conv3 = ResBlock(2 * c3, c3)
        self.up2 = nn.ConvTranspose3d(c3, c2, 2, stride=2)
        self.pi1 = PIBlock(c2)
        self.conv4 = ResBlock(2 * c2, c2)

    def forward(self, a2: torch.Tensor, a3: torch.Tensor, a4: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b3 = self.conv1(torch.cat([a3, self.down1(a2)], 1))
        b4 = self.conv2(torch.cat([a4, self.down2(b3)], 1))
        c4 = self.pi3(b4)
        c3 = self.conv3(torch.cat([self.up1(c4), self.pi2(b3)], 1))
        c2 = self.conv4(torch.cat([self.up2(c3), self.pi1(a2)], 1))
        return c2, c3, c4


class PIModule(nn.Module):
    """Turn encoder features (x2, x3, x4) into re-isotropised skips of the same shapes.

    Args:
        channels: widths of x2, x3, x4 (36, 48, 64 in ReIsoSegRMV6); inner widths are these // 4.
        z_factors: (s2*s3, s3), the residual anisotropy of x2 and x3 (see `anisotropy.pi_z_factors`).
    """

    def __init__(self, channels: Sequence[int], z_factors: Sequence[int]):
        super().__init__()
        inner = [c // 4 for c in channels]
        self.z_factors = tuple(int(z) for z in z_factors)
        self.compress = nn.ModuleList(nn.Conv3d(c, i, 1) for c, i in zip(channels, inner))
        self.pi_net = PINet(inner)
        self.restore = nn.ModuleList(nn.Conv3d(i, c, 1) for c, i in zip(channels, inner))

    def forward(self, x2: torch.Tensor, x3: torch.Tensor, x4: torch.Tensor,
                choice: PIChoice | None = None,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns skips shaped like (x2, x3, x4); `choice` fixes the random transform (else drawn)."""
        choice = choice or draw_pi_choice(generator)
        a2, a3, a4 = (conv(x) for conv, x in zip(self.compress, (x2, x3, x4)))
        a2 = pseudo_isotropic(a2, self.z_factors[0], choice.mode)
        a3 = pseudo_isotropic(a3, self.z_factors[1], choice.mode)
        c2, c3, c4 = self.pi_net(*(swap_axes(a, choice.swap) for a in (a2, a3, a4)))
        c2, c3, c4 = (swap_axes(c, choice.swap) for c in (c2, c3, c4))
        c2 = squeeze_z(c2, self.z_factors[0])
        c3 = squeeze_z(c3, self.z_factors[1])
        return tuple(conv(c) for conv, c in zip(self.restore, (c2, c3, c4)))  # type: ignore[return-value]
