"""Any box of an nnU-Net engine's whole-volume sliding-window prediction, computed from the windows that touch it.

Both nnU-Net engines predict a volume the same way: normalise it with whole-volume statistics, resample it to the
planned spacing, pad it to at least the patch with zeros, predict overlapping windows of a fixed grid (optionally
mirrored), weight each by a Gaussian, divide by the summed weights and resample the result back. A box of that
result depends only on the windows that touch it, so `WindowPredictor.predict_core` computes it exactly from those
windows. What differs between engines is a small set of hooks: the grid, the Gaussian, one window's prediction
(probabilities on v1, logits on v2), which axis is resampled section by section, and the final nonlinearity (none
on v1, softmax on v2, which resamples logits).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from reisoseg.errors import ReIsoSegError
from reisoseg.inference.model import CroppedVolume
from reisoseg.inference.resampling import axis_maps, resample_back, resample_box
from reisoseg.inference.tiles import clipped, windows_touching, zero_padded


@dataclass(frozen=True)
class Normalisation:
    """nnU-Net's intensity schemes (z-score, CT, none) with whole-volume statistics passed in."""

    scheme: str
    use_nonzero_mask: bool
    mean: float = 0.0
    std: float = 1.0  # the divisor, with the engine's own guard against zero already applied
    clip_low: float | None = None
    clip_high: float | None = None

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Normalise a float32 region in place and return it; voxels outside the nonzero mask become 0 if masked."""
        mask = data != 0 if self.use_nonzero_mask else None
        if self.clip_low is not None:
            np.clip(data, self.clip_low, self.clip_high, out=data)
        if self.scheme != "noNorm":
            data -= np.float32(self.mean)
            data /= np.float32(self.std)
        if mask is not None:
            data[~mask] = 0
        return data


class WindowPredictor:
    """A loaded model on one device (`reisoseg.inference.model.BlockModel`); an engine sets the attributes and
    implements the hooks."""

    device: torch.device
    num_classes: int
    patch_size: tuple[int, int, int]
    target_spacing: tuple[float, float, float]
    mixed_precision: bool
    default_export: bool  # the engine resamples its output back with order 1, section by section where anisotropic
    accumulator: type = np.float32  # the precision the engine sums weighted windows in (v2: float16)

    def uses_gaussian(self, windows: int) -> bool:
        """Whether windows are Gaussian-weighted when the whole grid has `windows` of them."""
        return windows > 1

    def normalisation(self, mean: float, std: float) -> Normalisation:
        raise NotImplementedError

    def window_starts(self, patch_size: Sequence[int], shape: Sequence[int], step_size: float) -> list[list[int]]:
        raise NotImplementedError

    def gaussian(self) -> np.ndarray:
        raise NotImplementedError

    def predict_tile(self, tile: torch.Tensor, gaussian: torch.Tensor | None, mirroring: bool) -> torch.Tensor:
        """The engine's output for one window (classes, *patch), averaged over folds."""
        raise NotImplementedError

    def separate_axis(self, spacing: Sequence[float]) -> int | None:
        """The axis the engine resamples by nearest neighbour (section by section in-plane), or None."""
        raise NotImplementedError

    def finish(self, outputs: np.ndarray) -> np.ndarray:
        """Probabilities from the resampled, window-averaged outputs."""
        return outputs

    @torch.no_grad()
    def predict_windows(self, region: np.ndarray, starts: Sequence[Sequence[int]], *, use_gaussian: bool,
                        mirroring: bool) -> np.ndarray:
        """Window-averaged outputs over `region` (z, y, x), from the windows starting at the product of `starts`.

        Windows are visited and accumulated in the engine's order and precision, each weighted by the Gaussian
        (`use_gaussian`), so that a region covering the same windows gives the same values.
        """
        patch = self.patch_size
        weight = self.gaussian() if use_gaussian else np.ones(patch, dtype=np.float32)
        multiplier = torch.from_numpy(weight) if use_gaussian else None
        summed = np.zeros((self.num_classes, *region.shape), dtype=self.accumulator)
        weights = np.zeros(region.shape, dtype=self.accumulator)
        tensor = torch.from_numpy(np.ascontiguousarray(region, dtype=np.float32))[None, None]
        autocast = torch.autocast("cuda", enabled=self.mixed_precision) if self.device.type == "cuda" else \
            contextlib.nullcontext()
        for z in starts[0]:
            for y in starts[1]:
                for x in starts[2]:
                    window = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
                    with autocast:
                        prediction = self.predict_tile(tensor[(slice(None), slice(None), *window)], multiplier,
                                                       mirroring)
                    summed[(slice(None), *window)] += prediction.float().cpu().numpy()
                    weights[window] += weight
        summed /= weights[None]
        return summed.astype(np.float32, copy=False)

    def predict_core(self, volume: CroppedVolume, core: Sequence[tuple[int, int]], *, step_size: float,
                     mirroring: bool) -> np.ndarray:
        """Class probabilities of `core` (cropped coordinates) from the windows of the whole-volume grid that touch
        it; at another spacing than the plans', from the box of the whole-volume resampling they need."""
        stats = volume.statistics
        cropped = list(volume.shape)
        normalisation = self.normalisation(stats.mean, stats.std)
        maps = axis_maps(cropped, volume.spacing, self.target_spacing, self.separate_axis(volume.spacing))
        resampled = [m.target for m in maps]
        if resampled != cropped and not self.default_export:
            raise ReIsoSegError(f"{volume.source}: this model's plans export with non-default resampling; segment "
                                f"data at the planned spacing {list(self.target_spacing)} nm, or use reisoseg predict")
        needed = core if resampled == cropped else [m.target_range_for_linear(lo, hi) for m, (lo, hi) in
                                                    zip(maps, core)]
        region, starts, counts = windows_touching(needed, resampled, self.patch_size, step_size, self.window_starts)
        inner = clipped(region, resampled)
        if resampled == cropped:
            values = volume.read(inner)
        else:
            source = [m.source_range(lo, hi) for m, (lo, hi) in zip(maps, inner)]
            clip = ((np.array(stats.section_min), np.array(stats.section_max)) if maps[0].nearest
                    else (min(stats.section_min), max(stats.section_max)))
            values = resample_box(volume.read(source), [lo for lo, _ in source], maps, inner, clip)
        image = zero_padded(normalisation.apply(values), inner, region)  # nnU-Net pads normalised data with 0
        outputs = self.predict_windows(image, starts, use_gaussian=self.uses_gaussian(math.prod(counts)),
                                       mirroring=mirroring)
        kept = outputs[(slice(None), *(slice(lo - r[0], hi - r[0]) for (lo, hi), r in zip(needed, region)))]
        if resampled != cropped:
            kept = resample_back(kept, [lo for lo, _ in needed], maps, core)
        return self.finish(kept)


def coarse_axis(spacing: Sequence[float], target_spacing: Sequence[float], separate, lowres_axes) -> int | None:
    """nnU-Net's choice of the axis resampled section by section, from the engine's own two rules (`separate`:
    spacing -> bool, `lowres_axes`: spacing -> axes), refusing anything but z."""
    for candidate in (spacing, target_spacing):
        if separate(candidate):
            axes = list(lowres_axes(candidate))
            if len(axes) != 1:
                return None
            if axes[0] != 0:
                raise ReIsoSegError(f"spacing {list(spacing)} nm: the coarsest axis is not z; blockwise "
                                    f"resampling needs z to be the coarse axis")
            return 0
    return None
