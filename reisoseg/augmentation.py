"""Augmentations for the defects of serial-section EM, one section (z index) at a time.

Serial sections get lost or come out blank, shift in-plane against their neighbours after alignment, blur, or jump
in brightness and contrast. nnU-Net's augmentation knows none of these; PyTorch Connectomics trains with similar
ones. Each transform takes and returns batchgenerators' data dictionary (`data` and `seg` arrays of shape
(batch, channels, z, y, x), intensities already normalised), so it runs inside nnU-Net's augmentation workers, and
picks for every sample, with probability `p_per_sample`, between 1 and `max_sections` sections to damage. Images
are changed; labels stay the truth, except for a shifted section, where they move with the image (the generator's
misalignment does the same). `em_defects()` is the set `reisoseg train --em_augmentation` adds.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import ndimage


@dataclass
class SectionDefect:
    """Base: choose the damaged sections of each sample and call `damage` on them."""

    p_per_sample: float = 0.15  # chance that a sample gets this defect at all
    max_sections: int = 2  # damaged sections per affected sample: 1..max_sections, distinct

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        data, seg = data_dict["data"], data_dict.get("seg")
        for b in range(data.shape[0]):
            if np.random.uniform() >= self.p_per_sample:
                continue
            count = np.random.randint(1, min(self.max_sections, data.shape[2]) + 1)
            for z in np.random.choice(data.shape[2], count, replace=False):
                self.damage(data[b, :, z], None if seg is None else seg[b, :, z])
        return data_dict

    def damage(self, image: np.ndarray, labels: np.ndarray | None) -> None:
        """Change one section in place: `image` (channels, y, x), its `labels` (channels, y, x) or None."""
        raise NotImplementedError


@dataclass
class MissingSection(SectionDefect):
    """A lost or blank section: filled with one value, half the time its mean intensity, half the time a value
    between its 1st and 99th percentile (a dark or bright frame)."""

    def damage(self, image, labels):
        for channel in image:
            low, high = np.percentile(channel, (1, 99))
            channel[...] = channel.mean() if np.random.uniform() < 0.5 else np.random.uniform(low, high)


@dataclass
class MisalignedSection(SectionDefect):
    """A section shifted in-plane by up to `max_shift` pixels on each axis (edges repeated), labels with it."""

    max_shift: int = 6

    def damage(self, image, labels):
        shift = (0, *np.random.randint(-self.max_shift, self.max_shift + 1, 2))
        image[...] = ndimage.shift(image, shift, order=0, mode="nearest")
        if labels is not None:
            labels[...] = ndimage.shift(labels, shift, order=0, mode="nearest")


@dataclass
class BlurredSection(SectionDefect):
    """An out-of-focus section: in-plane Gaussian blur with sigma drawn from `sigma` (pixels)."""

    sigma: tuple[float, float] = (1.0, 3.0)

    def damage(self, image, labels):
        sigma = np.random.uniform(*self.sigma)
        for channel in image:
            channel[...] = ndimage.gaussian_filter(channel, sigma)


@dataclass
class SectionContrast(SectionDefect):
    """A jump in contrast and brightness: the section's intensities scaled about its mean by a factor drawn from
    `contrast`, then moved by `brightness` (in standard deviations of the normalised image)."""

    contrast: tuple[float, float] = (0.6, 1.4)
    brightness: tuple[float, float] = (-0.5, 0.5)

    def damage(self, image, labels):
        for channel in image:
            mean = channel.mean()
            channel[...] = (channel - mean) * np.random.uniform(*self.contrast) + mean + np.random.uniform(
                *self.brightness)


def em_defects() -> list[SectionDefect]:
    """The four defects with their default probabilities and strengths."""
    return [MissingSection(), MisalignedSection(), BlurredSection(), SectionContrast()]


class DefectedBatches:
    """A batchgenerators data loader whose batches get `defects` before anything downstream (nnU-Net's spatial and
    intensity augmentation) sees them: the loader is wrapped, the engine's pipeline is left as it is."""

    def __init__(self, loader: Any, defects: Sequence[SectionDefect]):
        self.loader, self.defects = loader, list(defects)

    def set_thread_id(self, thread_id: int) -> None:
        """Augmentation workers tell each loader copy which worker it is (batchgenerators' protocol)."""
        self.loader.set_thread_id(thread_id)

    def __iter__(self) -> DefectedBatches:
        return self

    def __next__(self) -> dict[str, Any]:
        batch = next(self.loader)
        for defect in self.defects:
            batch = defect(**batch)
        return batch
