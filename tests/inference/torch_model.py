"""A model for blockwise segmentation in pure torch (no nnU-Net): ReIsoSegRMV6 with seeded random weights, plain
sliding windows averaged uniformly. It shows what another engine has to implement (`reisoseg.inference.model`)."""
from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from reisoseg.inference.model import CroppedVolume
from reisoseg.inference.tiles import clipped, windows_touching, zero_padded
from reisoseg.network import ReIsoSegRMV6

PATCH = (4, 32, 32)  # divisible by what ani_scale (2, 2, 2) pools: z by 2, y and x by 16


def uniform_grid(patch: Sequence[int], shape: Sequence[int], step_size: float) -> list[list[int]]:
    """Window starts from 0 to shape - patch, evenly spread, at most step_size * patch apart."""
    starts = []
    for p, s in zip(patch, shape):
        count = 1 if s == p else math.ceil((s - p) / (p * step_size)) + 1
        starts.append([0] if count == 1 else [round(i * (s - p) / (count - 1)) for i in range(count)])
    return starts


class TorchBlockModel:
    def __init__(self, seed: int, device: torch.device, seconds_per_block: float = 0.0):
        self.seconds_per_block = seconds_per_block  # slows blocks down, so that a test can kill a run midway
        torch.manual_seed(seed)
        self.network = ReIsoSegRMV6(1, 2, (2, 2, 2), deep_supervision=False).to(device).eval()
        self.device = device
        self.num_classes = 2

    @torch.no_grad()
    def predict_core(self, volume: CroppedVolume, core: Sequence[tuple[int, int]], *, step_size: float,
                     mirroring: bool) -> np.ndarray:
        region, starts, _ = windows_touching(core, volume.shape, PATCH, step_size, uniform_grid)
        inner = clipped(region, volume.shape)
        statistics = volume.statistics
        image = zero_padded((volume.read(inner) - statistics.mean) / statistics.std, inner, region)
        summed = np.zeros((self.num_classes, *image.shape), np.float32)
        covered = np.zeros(image.shape, np.float32)
        for start in itertools.product(*starts):
            window = tuple(slice(s, s + p) for s, p in zip(start, PATCH))
            logits = self.network(torch.from_numpy(np.ascontiguousarray(image[window]))[None, None].to(self.device))
            summed[(slice(None), *window)] += torch.softmax(logits, 1)[0].cpu().numpy()
            covered[window] += 1
        summed /= covered
        time.sleep(self.seconds_per_block)
        return summed[(slice(None), *(slice(lo - r[0], hi - r[0]) for (lo, hi), r in zip(core, region)))]


@dataclass(frozen=True)
class TorchModelLoader:
    seed: int = 0
    seconds_per_block: float = 0.0

    @property
    def num_classes(self) -> int:
        return 2

    @property
    def use_nonzero_mask(self) -> bool:
        return False

    @property
    def instance_settings(self) -> None:
        return None

    def settings(self) -> dict:
        return {"model": f"torch ReIsoSegRMV6 seed {self.seed}"}

    def load(self, device: torch.device) -> TorchBlockModel:
        return TorchBlockModel(self.seed, device, self.seconds_per_block)
