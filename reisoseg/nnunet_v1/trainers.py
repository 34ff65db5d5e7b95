"""ReIsoSeg trainers on nnU-Net v1's `nnUNetTrainerV2`; the four RMA trainers differ by their pattern only
(reisoseg.network.anisotropy.with_fixed_patterns).

The method's trainer overrides only what the method changes:
- `process_plans`: choose the pooling pattern (fixed, or from the planned spacing) and fit the patch to it;
- `setup_DA_params`: the six deep-supervision target scales;
- `initialize`: replace the loss by `ReIsoLoss`;
- `initialize_network`, `patch_divisor`, `estimate_step_memory`: `ReIsoSegV1Network` and what it needs;
- `reported_loss`: branch losses recorded, validation loss = L_ani (the inference branch);
- `run_online_evaluation`: pseudo-Dice (hence `model_best`) from the ani head used at inference, not the iso head;
- `on_epoch_end`: log L_iso and L_ani beside the total.

The device, the training step (AMP, DDP), checkpoints, SIGTERM, sparse labels, EM defect augmentation, the time
and memory budgets come from `EMTrainingMixin`, which the baseline `nnUNetTrainerV2EM` shares.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from nnunet.training.network_training.nnUNetTrainerV2 import nnUNetTrainerV2

from reisoseg.io.atomic import atomic_file
from reisoseg.layout import BRANCH_LOSSES_FILE, TRAINER_SETTINGS_FILE
from reisoseg.loss import DEFAULT_ANI_WEIGHT, DS_WEIGHTS, ReIsoLoss
from reisoseg.network.anisotropy import (
    ani_scale_from_spacing,
    deep_supervision_scales,
    fit_patch_size,
    ratio_from_spacing,
    required_divisor,
    with_fixed_patterns,
)
from reisoseg.network.memory import MemoryEstimate, training_step_memory
from reisoseg.nnunet_v1.em_training import EMTrainingMixin
from reisoseg.nnunet_v1.model_files import dataset_class_names
from reisoseg.nnunet_v1.network import ReIsoSegV1Network
from reisoseg.nnunet_v1.registry import register

REFERENCE_EPOCHS = 600


class ReIsoSegTrainer(EMTrainingMixin, nnUNetTrainerV2):
    """ReIsoSeg on nnU-Net v1. Subclasses pin `ani_scale`; None derives it from the plan's spacing ratio."""

    ani_scale: ClassVar[tuple[int, int, int] | None] = None  # per pooling stage: 2 = pool in-plane only

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_num_epochs = REFERENCE_EPOCHS
        self.ani_weight = DEFAULT_ANI_WEIGHT
        self.pattern: tuple[int, int, int] | None = None
        self._branch_losses: dict[str, list[tuple[float, float]]] = {"train": [], "val": []}
        self.branch_loss_history: list[dict[str, float]] = []

    def process_plans(self, plans):
        """nnUNetTrainer.process_plans, then pick the pattern and make the patch divisible by what it needs."""
        super().process_plans(plans)
        spacing = self.plans["plans_per_stage"][self.stage]["current_spacing"]
        if self.ani_scale is None:
            recorded = self.recorded_settings(spacing)
            self.pattern = tuple(recorded["ani_scale"]) if recorded else ani_scale_from_spacing(spacing)
            self.print_to_log_file(f"planned spacing {list(np.round(spacing, 3))} (ratio "
                                   f"{ratio_from_spacing(spacing):.2f}): ani_scale {list(self.pattern)}"
                                   f"{f' (as recorded in {TRAINER_SETTINGS_FILE})' if recorded else ''}")
        else:
            self.pattern = self.ani_scale
        fitted = fit_patch_size(self.patch_size, self.pattern)
        if tuple(fitted) != tuple(self.patch_size):
            self.print_to_log_file(f"patch {list(self.patch_size)} adapted to {list(fitted)} for ani_scale "
                                   f"{list(self.pattern)}")
            self.patch_size = np.array(fitted)

    def patch_divisor(self) -> tuple[int, int, int]:
        return required_divisor(self.pattern)

    def estimate_step_memory(self, patch_size: tuple[int, int, int]) -> MemoryEstimate:
        return training_step_memory(patch_size, self.batch_size, self.pattern, num_classes=self.num_classes,
                                    mixed_precision=self.fp16)

    def recorded_settings(self, spacing) -> dict | None:
        """What this fold's training chose (its reisoseg.json), if it trained this trainer on plans of the same
        spacing: a trained model predicts, and continues training, with the pattern it was trained with, even after
        the rule that picks patterns changes."""
        path = os.path.join(self.output_folder, TRAINER_SETTINGS_FILE)
        if not os.path.isfile(path):
            return None
        with open(path) as handle:
            record = json.load(handle)
        planned = record.get("planned_spacing", [])
        if record.get("trainer") != type(self).__name__ or len(planned) != len(spacing) or \
                not np.allclose(planned, spacing):
            return None
        return record

    def setup_DA_params(self):
        """nnUNetTrainerV2's augmentation, with the six DS scales (x2-level heads halve z only if s1 == 1)."""
        super().setup_DA_params()
        self.deep_supervision_scales = deep_supervision_scales(self.pattern)

    def initialize(self, training=True, force_load_plans=False):
        """nnUNetTrainerV2.initialize with its MultipleOutputLoss2 replaced by ReIsoLoss."""
        super().initialize(training, force_load_plans)
        if not isinstance(self.loss, ReIsoLoss):
            self.loss = ReIsoLoss(self.loss.loss, DS_WEIGHTS, ani_weight=self.ani_weight)
        if training and self.writes_files:
            spacing = self.plans["plans_per_stage"][self.stage]["current_spacing"]
            with atomic_file(os.path.join(self.output_folder, TRAINER_SETTINGS_FILE)) as temporary:
                temporary.write_text(json.dumps({
                    "trainer": type(self).__name__, "ani_scale": [int(v) for v in self.pattern],
                    "patch_size": [int(v) for v in self.patch_size], "ani_weight": float(self.ani_weight),
                    "planned_spacing": [float(v) for v in spacing],
                    "spacing_ratio": float(ratio_from_spacing(spacing)),
                    "class_names": list(dataset_class_names(Path(self.dataset_directory) / "dataset.json",
                                                            self.num_classes))}, indent=1))

    def per_head_loss(self) -> torch.nn.Module:
        return self.loss.base_loss

    def head_weights(self) -> tuple[float, ...]:
        return self.loss.weights

    def checkpoint_state(self, completed_epochs: int, save_optimizer: bool = True) -> dict:
        """The mixin's checkpoint plus the branch-loss history of the completed epochs."""
        state = super().checkpoint_state(completed_epochs, save_optimizer)
        state["branch_loss_history"] = [h for h in self.branch_loss_history if h["epoch"] < completed_epochs]
        return state

    def load_checkpoint_ram(self, checkpoint, train=True):
        super().load_checkpoint_ram(checkpoint, train)
        self.branch_loss_history = [h for h in checkpoint.get("branch_loss_history", []) if h["epoch"] < self.epoch]

    def initialize_network(self):
        """ReIsoSegRMV6 instead of Generic_UNet; the plans' pools and kernels do not apply to it."""
        self.network = ReIsoSegV1Network(self.num_input_channels, self.num_classes, self.pattern).to(self.device)

    def reported_loss(self, loss: torch.Tensor, training: bool) -> float:
        """The total loss when training and L_ani (the inference branch) when validating; both branch losses are
        kept for the epoch's log."""
        self._branch_losses["train" if training else "val"].append((self.loss.last_iso, self.loss.last_ani))
        return float(loss) if training else self.loss.last_ani

    def run_online_evaluation(self, output, target):
        """Pseudo-Dice from head 3 (ani, full resolution), the one inference uses, rather than head 0 (iso):
        documentation/method.md, difference 2."""
        return super().run_online_evaluation(output[3:], target[3:])

    def on_epoch_end(self):
        """Log L_iso/L_ani (also to branch_losses.json); the mixin then refits the epochs to a time budget."""
        means = {"epoch": self.epoch}
        for phase, values in self._branch_losses.items():
            if values:
                iso, ani = np.mean(values, axis=0)
                means[f"{phase}_iso"], means[f"{phase}_ani"] = float(iso), float(ani)
            values.clear()
        means["total_train"] = float(self.all_tr_losses[-1]) if self.all_tr_losses else float("nan")
        self.branch_loss_history.append(means)
        self.print_to_log_file("  ".join(f"{key} {value:.4f}" for key, value in means.items() if key != "epoch"))
        if self.writes_files:
            with atomic_file(os.path.join(self.output_folder, BRANCH_LOSSES_FILE)) as temporary:
                temporary.write_text(json.dumps(self.branch_loss_history))
        return super().on_epoch_end()


class nnUNetTrainerV2EM(EMTrainingMixin, nnUNetTrainerV2):  # noqa: N801 (nnU-Net's naming)
    """The baseline: nnU-Net v1's default trainer and Generic_UNet, with what `EMTrainingMixin` adds."""


TRAINERS: dict[str, type[nnUNetTrainerV2]] = {
    register(cls).__name__: cls
    for cls in (ReIsoSegTrainer, *with_fixed_patterns(ReIsoSegTrainer).values(), nnUNetTrainerV2EM)
}
