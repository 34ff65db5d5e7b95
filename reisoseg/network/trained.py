"""A trained ReIsoSeg network as its inference branch needs it, independent of the engine that trained it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from reisoseg.network.reisoseg_net import ReIsoSegRMV6


@dataclass(frozen=True, eq=False)  # compared and hashed by identity: the weights are large
class TrainedNetwork:
    """The weights of `ReIsoSegRMV6` with what it was trained on: the planned spacing (nm, z y x), the patch, the
    class names (background first) and the intensity normalisation ("zscore" per volume, or "none")."""

    ani_scale: tuple[int, int, int]
    input_channels: int
    class_names: tuple[str, ...]
    state_dict: dict[str, Any]
    spacing: tuple[float, float, float]
    patch_size: tuple[int, int, int]
    normalisation: str
    trainer: str

    def kwargs(self) -> dict[str, Any]:
        """`ReIsoSegRMV6`'s arguments for the inference branch (no deep supervision), as plain values."""
        return {"input_channels": self.input_channels, "num_classes": len(self.class_names),
                "ani_scale": [int(s) for s in self.ani_scale], "deep_supervision": False}

    def network(self) -> ReIsoSegRMV6:
        """The inference branch with the trained weights, in evaluation mode, on the CPU."""
        network = ReIsoSegRMV6(**self.kwargs())
        network.load_state_dict(self.state_dict)
        return network.eval()


def strip_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The entries under `prefix` (an engine adapter's attribute, e.g. "net."), named as in `ReIsoSegRMV6`."""
    return {key[len(prefix):]: value for key, value in state_dict.items() if key.startswith(prefix)}
