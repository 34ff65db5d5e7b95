"""Sparse annotation on nnU-Net v1: a label named `ignore` (the highest value, as nnU-Net v2 has it) marks voxels
nobody labelled. nnU-Net v1 plans it as one more class; `EMTrainingMixin` then uses the pieces below so that
- the network predicts the real classes only (`output_classes`), also when a model folder is loaded elsewhere: the
  ignore value is recorded in the plans the trainer stores (`IGNORE_KEY`);
- ignored voxels count neither in the cross-entropy nor in the soft Dice (`DiceCEWithIgnore`) of any
  deep-supervision head. nnU-Net's downsampled targets are resized with order 0, so they keep the ignore value;
- nnU-Net's foreground oversampling, which would aim a third of the patches at the "ignore class", aims them at
  annotated voxels instead (`annotated_locations`);
- the fold validation after training (its summary.json and the postprocessing it determines) scores annotated
  voxels only (`compat.scoring_annotated_voxels`).
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from reisoseg.io.nnunet_task import ignore_label

IGNORE_KEY = "reisoseg_ignore_label"  # in plans: the label value that marks unannotated voxels
LOCATIONS_PER_CASE = 10_000  # annotated voxels remembered per case for patch sampling (nnU-Net keeps as many)


def dataset_ignore_label(dataset_directory: str | os.PathLike | None) -> int | None:
    """`ignore_label` of the dataset.json nnU-Net copied into a preprocessed task folder, if there is one."""
    path = os.path.join(dataset_directory or "", "dataset.json")
    if not os.path.isfile(path):
        return None
    with open(path) as handle:
        return ignore_label(json.load(handle)["labels"], path)


def output_classes(plans: dict[str, Any]) -> int:
    """Channels a network trained on these plans predicts: background, the classes, not the ignore label."""
    return int(plans["num_classes"]) + 1 - (plans.get(IGNORE_KEY) is not None)


class DiceCEWithIgnore(torch.nn.Module):
    """nnU-Net v1's Dice + cross-entropy (its `DC_and_CE_loss` with the default sum of both) over annotated voxels
    only: its own soft Dice with a loss mask, the cross-entropy averaged over annotated voxels. Ignored voxels'
    labels never reach the computation, so they change neither the loss nor any gradient; a batch without annotated
    voxels gives 0 with zero gradients. The target is not changed in place (the online evaluation reads it)."""

    def __init__(self, dice_ce: torch.nn.Module, ignore: int):
        super().__init__()
        self.dc = dice_ce.dc  # nnU-Net's SoftDiceLoss, its settings kept (replaced by a global one under DDP)
        self.weight_ce, self.weight_dice = dice_ce.weight_ce, dice_ce.weight_dice
        self.ignore = ignore

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        annotated = target != self.ignore
        mask = annotated.to(logits.dtype)
        count = mask.sum()
        if not count:
            return logits.sum() * 0.0
        labels = torch.where(annotated, target, torch.zeros_like(target))
        dice = self.dc(logits, labels, loss_mask=mask)
        cross_entropy = F.cross_entropy(logits, labels[:, 0].long(), reduction="none")
        return self.weight_ce * (cross_entropy * mask[:, 0]).sum() / count + self.weight_dice * dice


def without_ignored(output: torch.Tensor, target: torch.Tensor, ignore: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, target) for nnU-Net's online pseudo-Dice with ignored voxels left out: there they are made certain
    background in both, so they add no true or false positive or false negative of any foreground class."""
    annotated = target != ignore
    logits = output.detach().clone()
    logits[:, :1] = torch.where(annotated, logits[:, :1], torch.finfo(logits.dtype).max)
    return logits, torch.where(annotated, target, torch.zeros_like(target))


def _annotated(section: np.ndarray, ignore: int) -> np.ndarray:
    """Labelled voxels: not `ignore`, and inside the image (nnU-Net marks the cropped-away outside with -1)."""
    return (section >= 0) & (section != ignore)


def section_counts(segmentation: np.ndarray, ignore: int) -> tuple[np.ndarray, np.ndarray]:
    """Per section: annotated voxels, and voxels inside the image; read section by section, so that a
    memory-mapped case stays on disk."""
    counts = np.array([(np.count_nonzero(_annotated(s, ignore)), np.count_nonzero(s >= 0)) for s in segmentation])
    return counts[:, 0], counts[:, 1]


def annotated_locations(segmentation: np.ndarray, ignore: int, count: int = LOCATIONS_PER_CASE,
                        per_section: np.ndarray | None = None) -> np.ndarray:
    """Up to `count` random (z, y, x) positions of annotated voxels; `per_section`: their number in each section,
    if already counted (`section_counts`)."""
    if per_section is None:
        per_section = section_counts(segmentation, ignore)[0]
    total = int(per_section.sum())
    if total == 0:
        return np.zeros((0, 3), np.int64)
    draws = np.random.choice(len(per_section), size=min(count, total), p=per_section / total)
    found = []
    for z, times in zip(*np.unique(draws, return_counts=True)):
        section = segmentation[z]
        flat = np.flatnonzero(_annotated(section, ignore))
        picked = np.random.choice(flat, size=min(times, flat.size), replace=False)
        found.append(np.column_stack([np.full(picked.size, z), *np.unravel_index(picked, section.shape)]))
    return np.concatenate(found)
