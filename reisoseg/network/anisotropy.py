"""The `ani_scale` pooling pattern: one entry per encoder pooling stage 1-3 (documentation/method.md).

An entry of 2 means "features are still anisotropic here: pool in-plane only" (kernel (1,2,2)); 1 means pool
(2,2,2). The fourth pooling is always (2,2,2).
"""
from __future__ import annotations

import math
from typing import Sequence

PATTERNS_BY_RATIO: dict[int, tuple[int, int, int]] = {
    1: (1, 1, 1),
    2: (1, 1, 2),
    4: (1, 2, 2),
    8: (2, 2, 2),
}


def validate_ani_scale(ani_scale: Sequence[int]) -> tuple[int, int, int]:
    """Return `ani_scale` as a tuple after checking it has three entries in {1, 2}."""
    pattern = tuple(int(s) for s in ani_scale)
    if len(pattern) != 3 or any(s not in (1, 2) for s in pattern):
        raise ValueError(f"ani_scale must be three entries, each 1 or 2 (one per pooling stage), got {list(ani_scale)}")
    return pattern  # type: ignore[return-value]


def pool_kernel_sizes(ani_scale: Sequence[int]) -> list[tuple[int, int, int]]:
    """Max-pool kernels (= strides) of the four encoder stages, (z, y, x) each."""
    pattern = validate_ani_scale(ani_scale)
    return [(1, 2, 2) if s == 2 else (2, 2, 2) for s in pattern] + [(2, 2, 2)]


def required_divisor(ani_scale: Sequence[int]) -> tuple[int, int, int]:
    """Factor by which a patch's (z, y, x) extent must be divisible so that every skip matches its upsampled path."""
    kernels = pool_kernel_sizes(ani_scale)
    return tuple(math.prod(k[axis] for k in kernels) for axis in range(3))  # type: ignore[return-value]


def pi_z_factors(ani_scale: Sequence[int]) -> tuple[int, int]:
    """z upsampling factors of the PI module at x2 and x3: (s2*s3, s3). ani_scale[0] never enters the PI module."""
    s1, s2, s3 = validate_ani_scale(ani_scale)
    return s2 * s3, s3


def ratio_from_spacing(spacing_zyx: Sequence[float]) -> float:
    """Voxel anisotropy: z spacing over the mean in-plane spacing."""
    z, y, x = (float(s) for s in spacing_zyx)
    if min(z, y, x) <= 0:
        raise ValueError(f"spacing must be positive, got {list(spacing_zyx)}")
    return z / ((y + x) / 2)


def nearest_supported_ratio(ratio: float) -> int:
    """Nearest of 1, 2, 4, 8 on a log scale (a ratio of 6 maps to 8, 2.8 to 2); ratios below 1 map to 1."""
    log_ratio = math.log2(max(ratio, 1.0))
    return min(PATTERNS_BY_RATIO, key=lambda r: abs(math.log2(r) - log_ratio))


# The reference's trainers that pin a pattern, named by the z/xy spacing ratio each suits
FIXED_PATTERN_TRAINERS = {"ReIsoSegRMA1V6Trainer": (1, 1, 1), "ReIsoSegRMA2V6Trainer": (1, 1, 2),
                          "ReIsoSegRMA4V6Trainer": (1, 2, 2), "ReIsoSegRMA8V6Trainer": (2, 2, 2)}


def deep_supervision_scales(ani_scale: Sequence[int]) -> list[list[float]]:
    """The target scale of each of the six heads (iso then ani: full, full, x2 level): the x2-level heads halve z
    only where the first pooling stage pools z."""
    z = 0.5 if ani_scale[0] == 1 else 1.0
    full, half = [1.0, 1.0, 1.0], [z, 0.5, 0.5]
    return [full, full, half, full, full, half]


def with_fixed_patterns(trainer: type) -> dict[str, type]:
    """Subclasses of an engine's ReIsoSeg `trainer`, one per fixed pattern, that differ by `ani_scale` only."""
    return {name: type(name, (trainer,), {"ani_scale": pattern, "__module__": trainer.__module__,
                                          "__doc__": f"{trainer.__name__} with pattern {list(pattern)}."})
            for name, pattern in FIXED_PATTERN_TRAINERS.items()}


def ani_scale_from_spacing(spacing_zyx: Sequence[float]) -> tuple[int, int, int]:
    """Pooling pattern for data of this (z, y, x) spacing: the RMA1/2/4/8 pattern of the nearest supported ratio."""
    return PATTERNS_BY_RATIO[nearest_supported_ratio(ratio_from_spacing(spacing_zyx))]


class PatchDoesNotFit(ValueError):
    """A patch or input that the pooling pattern cannot take, or that no memory budget fits: the user's to change."""


def fit_patch_size(patch_size: Sequence[int], ani_scale: Sequence[int]) -> tuple[int, int, int]:
    """Largest patch not above `patch_size` that the pattern accepts (each axis rounded down to its divisor).

    Raises PatchDoesNotFit when an axis is smaller than its divisor: the pattern cannot fit that data.
    """
    divisor = required_divisor(ani_scale)
    fitted = []
    for axis, (size, div) in enumerate(zip(patch_size, divisor)):
        if size < div:
            raise PatchDoesNotFit(
                f"patch {list(patch_size)} is too small for ani_scale {list(ani_scale)}: axis {'zyx'[axis]} "
                f"has {size} voxels but must be a multiple of {div}")
        fitted.append(size // div * div)
    return tuple(fitted)  # type: ignore[return-value]


def check_input_shape(spatial_shape: Sequence[int], ani_scale: Sequence[int]) -> None:
    """Raise PatchDoesNotFit naming the shape and the divisor if a (z, y, x) input does not fit the pattern."""
    divisor = required_divisor(ani_scale)
    if any(size % div for size, div in zip(spatial_shape, divisor)):
        raise PatchDoesNotFit(
            f"input (z, y, x) = {tuple(spatial_shape)} is not divisible by {divisor}, which ani_scale "
            f"{list(ani_scale)} requires; crop or pad the input to a multiple")
