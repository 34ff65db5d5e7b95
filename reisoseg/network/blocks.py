"""Building blocks of the ReIsoSeg network, in plain PyTorch (documentation/method.md).

Axes are (B, C, Z, Y, X) with Z the coarse section axis.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

NEGATIVE_SLOPE = 0.01
INSTANCE_NORM_EPS = 1e-5
LAYER_NORM_EPS = 1e-6
LAYER_SCALE_INIT = 1e-6


def _same_padding(kernel_size: Sequence[int]) -> tuple[int, ...]:
    return tuple(k // 2 for k in kernel_size)


class ConvNormAct(nn.Module):
    """Conv3d (bias) -> InstanceNorm3d (affine) -> LeakyReLU(0.01); the reference's "CNL" (no dropout)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int] = (3, 3, 3)):
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, tuple(kernel_size), padding=_same_padding(kernel_size))
        self.norm = nn.InstanceNorm3d(out_channels, eps=INSTANCE_NORM_EPS, affine=True)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class ResBlock(nn.Module):
    """In-plane (1,3,3) ConvNormAct, then a residual pair of 3x3x3 ConvNormActs, norm and activation after the add.

    The residual is taken after the first, in-plane conv, so the block can change the channel count.
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.inplane = ConvNormAct(in_channels, out_channels, (1, 3, 3))
        self.conv_a = ConvNormAct(out_channels, out_channels)
        self.conv_b = ConvNormAct(out_channels, out_channels)
        self.norm = nn.InstanceNorm3d(out_channels, eps=INSTANCE_NORM_EPS, affine=True)
        self.act = nn.LeakyReLU(NEGATIVE_SLOPE, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.inplane(x)
        out = self.conv_b(self.conv_a(residual))
        return self.act(self.norm(out + residual))


class ChannelLayerNorm3d(nn.Module):
    """LayerNorm over the channel axis of a (B, C, Z, Y, X) tensor (ConvNeXt "channels_first", biased variance)."""

    def __init__(self, channels: int, eps: float = LAYER_NORM_EPS):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None, None] * x + self.bias[:, None, None, None]


class UXUnit(nn.Module):
    """3D-UX-Net/ConvNeXt unit: depthwise 7^3 conv, LayerNorm, grouped 1x1x1 expansion x4, GELU, grouped projection,
    layer scale (init 1e-6), residual add.

    Both pointwise convs are grouped with groups=channels, as in the reference: there is no channel mixing. All
    three convs keep their Conv3d parameters (reference layout, He init), but on CPU the depthwise 7^3 conv is
    evaluated by FFT and the pointwise convs as per-channel multiply-adds on a channels-last view: PyTorch's NCDHW
    grouped-conv backward is about 8x slower there (benchmarks/bench_forward.py). Same result up to float rounding.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Conv3d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=LAYER_NORM_EPS)
        self.expand = nn.Conv3d(channels, 4 * channels, 1, groups=channels)
        self.act = nn.GELU()
        self.project = nn.Conv3d(4 * channels, channels, 1, groups=channels)
        self.layer_scale = nn.Parameter(torch.full((channels,), LAYER_SCALE_INIT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu":
            y = depthwise_correlation_fft(x, self.depthwise.weight, self.depthwise.bias)
        else:
            y = self.depthwise(x)
        y = self.norm(y.permute(0, 2, 3, 4, 1))  # (B, Z, Y, X, C)
        c = y.shape[-1]
        # grouped 1x1x1 convs: output channel 4c+k of `expand` reads input channel c only
        hidden = self.act(y.unsqueeze(-1) * self.expand.weight.view(c, 4) + self.expand.bias.view(c, 4))
        y = (hidden * self.project.weight.view(c, 4)).sum(-1) + self.project.bias
        return x + (self.layer_scale * y).permute(0, 4, 1, 2, 3)


class PIBlock(nn.Module):
    """Two UX units followed by a channel LayerNorm; the reference's `skip_block` (depth 2, drop path 0)."""

    def __init__(self, channels: int):
        super().__init__()
        self.units = nn.Sequential(UXUnit(channels), UXUnit(channels))
        self.norm = ChannelLayerNorm3d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.units(x))


def init_he_(module: nn.Module, negative_slope: float = 1e-2) -> None:
    """Kaiming-normal (a=0.01) on every Conv3d/ConvTranspose3d, biases zero: nnU-Net's `InitWeights_He(1e-2)`."""
    if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
        nn.init.kaiming_normal_(module.weight, a=negative_slope)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def depthwise_correlation_fft(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """What `Conv3d(C, C, k, padding=k//2, groups=C)` computes, via FFT: O(log n) per voxel instead of k^3.

    Args:
        x: (B, C, Z, Y, X); weight: (C, 1, k, k, k) with odd k; bias: (C,).
    """
    k = weight.shape[-1]
    padded = F.pad(x, (k // 2,) * 6)
    size = padded.shape[2:]
    kernel = torch.flip(weight[:, 0], dims=(1, 2, 3))  # correlation = convolution with the flipped kernel
    spectrum = torch.fft.rfftn(padded, s=size, dim=(2, 3, 4)) * torch.fft.rfftn(kernel, s=size, dim=(1, 2, 3))
    # circular convolution over the padded size; the last Z, Y, X samples are the ones without wrap-around
    y = torch.fft.irfftn(spectrum, s=size, dim=(2, 3, 4))[:, :, k - 1:, k - 1:, k - 1:]
    return y + bias[:, None, None, None]


def nearest_resize(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """PyTorch's legacy nearest resize of the three spatial axes (slice replication up, every s-th slice down)."""
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(int(s) for s in size), mode="nearest")
