"""Device choice in one place: CUDA, then MPS, then CPU, unless the user names one.

Each command or library entry point resolves its device once and passes the result on.
"""
from __future__ import annotations

import os

import torch

from reisoseg.errors import ReIsoSegError

DEVICE_CHOICES = ("cpu", "cuda", "mps")


def resolve_device(name: str | None = None) -> torch.device:
    """The device called `name`, or the best available one; ReIsoSegError if the named one is missing.

    Naming `cpu` also hides every GPU from this process (CUDA_VISIBLE_DEVICES, before torch initialises CUDA):
    nnU-Net v1 moves data to any GPU it sees, whatever device was asked for."""
    if name == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in DEVICE_CHOICES:
        raise ReIsoSegError(f"unknown `device` {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ReIsoSegError("`device` cuda was asked for, but torch sees no CUDA GPU (CPU build or no driver)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ReIsoSegError("`device` mps was asked for, but this torch has no MPS backend")
    return torch.device(name)


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX512-BF16 or AMX), where bf16 autocast trains faster than
    float32; elsewhere it is emulated and slower. torch exposes the check only under private names, hence the
    guard."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)
