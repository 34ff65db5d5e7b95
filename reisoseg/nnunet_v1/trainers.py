"""ReIsoSeg trainers on nnU-Net v1's `nnUNetTrainerV2`; the four RMA trainers differ by their pattern only.

Overridden hooks, each for a reason the method gives (spec §3, §9):
- `process_plans`: choose the pooling pattern (fixed, or from the planned spacing) and fit the patch to it;
- `setup_DA_params`: the six deep-supervision target scales;
- `initialize`: replace the loss by `ReIsoLoss`;
- `initialize_network`: build `ReIsoSegV1Network` on the chosen device;
- `run_iteration`: torch.amp (fp16 on CUDA only), any device, branch losses recorded, validation loss = L_ani;
- `run_online_evaluation`: pseudo-Dice (hence `model_best`) from the ani head used at inference, not the iso head;
- `on_epoch_end`: log L_iso and L_ani beside the total.

Checkpoints, SIGTERM, sparse labels and EM defect augmentation come from `EMTrainingMixin`, which the baseline
`nnUNetTrainerV2EM` shares.
"""
from __future__ import annotations

import json
import os
from typing import ClassVar

import numpy as np
import torch
from nnunet.training.network_training.nnUNetTrainerV2 import nnUNetTrainerV2
from nnunet.utilities.to_torch import maybe_to_torch

from reisoseg.devices import resolve_device
from reisoseg.errors import ReIsoSegError
from reisoseg.io.atomic import atomic_file
from reisoseg.layout import TRAINER_SETTINGS_FILE
from reisoseg.loss import DEFAULT_ANI_WEIGHT, DS_WEIGHTS, ReIsoLoss
from reisoseg.network.anisotropy import PatchDoesNotFit, ani_scale_from_spacing, fit_patch_size, ratio_from_spacing
from reisoseg.network.memory import fit_patch_to_memory, training_step_memory
from reisoseg.nnunet_v1.em_training import EMTrainingMixin
from reisoseg.nnunet_v1.network import ReIsoSegV1Network
from reisoseg.nnunet_v1.registry import register

GRADIENT_CLIP_NORM = 12.0
REFERENCE_EPOCHS = 600


class ReIsoSegTrainer(EMTrainingMixin, nnUNetTrainerV2):
    """ReIsoSeg on nnU-Net v1. Subclasses pin `ani_scale`; None derives it from the plan's spacing ratio."""

    ani_scale: ClassVar[tuple[int, int, int] | None] = None  # per pooling stage: 2 = pool in-plane only

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.max_num_epochs = REFERENCE_EPOCHS
        self.ani_weight = DEFAULT_ANI_WEIGHT
        self.device: torch.device | None = None  # set by run_training; else the best available, at initialize
        self.pattern: tuple[int, int, int] | None = None
        self._branch_losses: dict[str, list[tuple[float, float]]] = {"train": [], "val": []}
        self.branch_loss_history: list[dict[str, float]] = []
        self.memory_budget_bytes: float | None = None  # if set, the patch is fitted to it when training starts
        self._training = False
        self._distributed_network = None  # DistributedDataParallel around self.network, for training steps

    def process_plans(self, plans):
        """nnUNetTrainer.process_plans, then pick the pattern and make the patch divisible by what it needs; in a
        distributed run, this rank's share of the global batch."""
        super().process_plans(plans)
        if self.ranks is not None:
            from reisoseg.nnunet_v1.distributed import split_batch

            self.batch_size = split_batch(self.batch_size, self.ranks)
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
        if self._training:
            self._fit_patch_to_memory(spacing)

    def _fit_patch_to_memory(self, spacing) -> None:
        """Shrink the patch to the memory budget, if any, and log the estimated memory of a training step."""
        patch = tuple(int(v) for v in self.patch_size)
        if self.memory_budget_bytes is None:
            estimate = training_step_memory(patch, self.batch_size, self.pattern, num_classes=self.num_classes,
                                            mixed_precision=self.fp16)
        else:
            try:
                patch, estimate = fit_patch_to_memory(patch, self.batch_size, self.pattern, spacing,
                                                      self.memory_budget_bytes, num_classes=self.num_classes,
                                                      mixed_precision=self.fp16)
            except PatchDoesNotFit as error:
                raise ReIsoSegError(str(error)) from error
            self.patch_size = np.array(patch)
        budget = "" if self.memory_budget_bytes is None else f" of a {self.memory_budget_bytes / 2**30:.1f} GiB budget"
        self.print_to_log_file(f"training patch {list(patch)}, batch {self.batch_size}: about {estimate.gib:.2f} GiB "
                               f"per step{budget}")

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
        z = 0.5 if self.pattern[0] == 1 else 1.0
        full, half = [1.0, 1.0, 1.0], [z, 0.5, 0.5]
        self.deep_supervision_scales = [full, full, half, full, full, half]

    def initialize(self, training=True, force_load_plans=False):
        """nnUNetTrainerV2.initialize with its MultipleOutputLoss2 replaced by ReIsoLoss."""
        self._training = training  # process_plans fits the patch to memory only for training
        if self.device is None:
            self.device = resolve_device()
        self.pin_memory = self.device.type == "cuda"
        self.fp16 = self.fp16 and self.device.type == "cuda"
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
                    "spacing_ratio": float(ratio_from_spacing(spacing))}, indent=1))

    def distribute(self) -> None:
        """DDP around the network (PI module included) and the batch Dice over the global batch. Called on every
        rank once all are initialised (DDP's constructor is a collective)."""
        from torch.nn.parallel import DistributedDataParallel

        from reisoseg.nnunet_v1.distributed import GlobalBatchDice

        dice = self.loss.base_loss.dc
        self.loss.base_loss.dc = GlobalBatchDice(dice.apply_nonlin, dice.batch_dice, dice.do_bg, dice.smooth)
        self._distributed_network = DistributedDataParallel(
            self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def checkpoint_state(self, completed_epochs: int, save_optimizer: bool = True) -> dict:
        """The mixin's checkpoint plus the branch-loss history of the completed epochs."""
        state = super().checkpoint_state(completed_epochs, save_optimizer)
        state["branch_loss_history"] = [h for h in self.branch_loss_history if h["epoch"] < completed_epochs]
        return state

    def load_checkpoint_ram(self, checkpoint, train=True):
        super().load_checkpoint_ram(checkpoint, train)
        self.branch_loss_history = [h for h in checkpoint.get("branch_loss_history", []) if h["epoch"] < self.epoch]

    def finish_online_evaluation(self):
        """nnU-Net's pseudo-Dice, over the validation batches of every rank."""
        if self.ranks is not None:
            from reisoseg.nnunet_v1.distributed import all_reduce_sum

            for name in ("online_eval_tp", "online_eval_fp", "online_eval_fn"):
                setattr(self, name, [all_reduce_sum(np.sum(getattr(self, name), 0))])
        super().finish_online_evaluation()

    def initialize_network(self):
        """ReIsoSegRMV6 instead of Generic_UNet; the plans' pools and kernels do not apply to it."""
        self.network = ReIsoSegV1Network(self.num_input_channels, self.num_classes, self.pattern).to(self.device)

    def _maybe_init_amp(self):
        if self.fp16 and self.amp_grad_scaler is None:
            self.amp_grad_scaler = torch.amp.GradScaler("cuda")

    def run_iteration(self, data_generator, do_backprop=True, run_online_evaluation=False):
        """One step; returns the total loss when training and L_ani (the inference branch) when validating."""
        self.stop_if_requested()
        batch = next(data_generator)
        data = maybe_to_torch(batch["data"]).to(self.device, non_blocking=True)
        target = [t.to(self.device, non_blocking=True) for t in maybe_to_torch(batch["target"])]
        self.optimizer.zero_grad(set_to_none=True)
        network = self._distributed_network if do_backprop and self._distributed_network else self.network
        with torch.autocast(self.device.type, enabled=self.fp16):
            output = network(data)
            loss = self.loss(output, target)
        if do_backprop:
            scaler = self.amp_grad_scaler if self.fp16 else None
            (scaler.scale(loss) if scaler else loss).backward()
            if scaler:
                scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), GRADIENT_CLIP_NORM)
            if scaler:
                scaler.step(self.optimizer)
                scaler.update()
            else:
                self.optimizer.step()
        self._branch_losses["train" if do_backprop else "val"].append((self.loss.last_iso, self.loss.last_ani))
        if run_online_evaluation:
            self.run_online_evaluation(output, target)
        return np.float32(loss.detach().cpu() if do_backprop else self.loss.last_ani)

    def run_online_evaluation(self, output, target):
        """Pseudo-Dice from head 3 (ani, full resolution) rather than head 0 (iso): spec §9.2."""
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
            with atomic_file(os.path.join(self.output_folder, "branch_losses.json")) as temporary:
                temporary.write_text(json.dumps(self.branch_loss_history))
        return super().on_epoch_end()


class ReIsoSegRMA1V6Trainer(ReIsoSegTrainer):
    """Pattern [1,1,1] for z/xy spacing ratio ~1."""

    ani_scale = (1, 1, 1)


class ReIsoSegRMA2V6Trainer(ReIsoSegTrainer):
    """Pattern [1,1,2] for ratio ~2."""

    ani_scale = (1, 1, 2)


class ReIsoSegRMA4V6Trainer(ReIsoSegTrainer):
    """Pattern [1,2,2] for ratio ~4."""

    ani_scale = (1, 2, 2)


class ReIsoSegRMA8V6Trainer(ReIsoSegTrainer):
    """Pattern [2,2,2] for ratio ~8."""

    ani_scale = (2, 2, 2)


class nnUNetTrainerV2EM(EMTrainingMixin, nnUNetTrainerV2):  # noqa: N801 (nnU-Net's naming)
    """The baseline: nnU-Net v1's default trainer and Generic_UNet, with what `EMTrainingMixin` adds."""


TRAINERS: dict[str, type[nnUNetTrainerV2]] = {
    register(cls).__name__: cls
    for cls in (ReIsoSegTrainer, ReIsoSegRMA1V6Trainer, ReIsoSegRMA2V6Trainer, ReIsoSegRMA4V6Trainer,
                ReIsoSegRMA8V6Trainer, nnUNetTrainerV2EM)
}
