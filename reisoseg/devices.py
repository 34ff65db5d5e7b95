"""Device choice in one place: CUDA, then MPS, then CPU, unless the user names one."""
from __future__ import annotations

import torch

from reisoseg.errors import ReIsoSegError

DEVICE_CHOICES = ("cpu", "cuda", "mps")


def resolve_device(name: str | None = None) -> torch.device:
    """The device called `name`, or the best available one; ReIsoSegError if the named one is missing."""
    if name is None:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name not in DEVICE_CHOICES:
        raise ReIsoSegError(f"unknown device {name!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ReIsoSegError("--device cuda was asked for, but torch sees no CUDA GPU (CPU build or no driver)")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ReIsoSegError("--device mps was asked for, but this torch has no MPS backend")
    return torch.device(name)
