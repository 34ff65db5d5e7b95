"""What training on real EM work needs beyond nnU-Net v2's trainer, for ours and for the baseline alike.

`V2TrainingMixin` goes before `nnUNetTrainer` in a trainer's bases (`ReIsoSegTrainer`, `nnUNetTrainerEM`):
- checkpoints that survive: every checkpoint is written atomically and flushed to disk, and `checkpoint_latest.pth`
  is written at the end of an epoch once `checkpoint_minutes` have passed since the last save (v2: every 50
  epochs, in place);
- SIGTERM (a cluster's preemption) saves `checkpoint_latest.pth` between iterations, with the epoch that was running
  counted as not done, and stops with `TrainingStopped`; `-c` repeats that epoch;
- snapshots (`snapshot_every_epochs`): `checkpoint_ep_NNN.pth` after every N epochs done, kept (v2 keeps none);
- a time budget (`time_budget_s`): after each epoch the remaining epochs are refitted to the budget at this run's
  mean epoch time, and v2's poly learning rate follows, so that the schedule ends when the budget does;
- the optimizer: v2's SGD by default, or AdamW (`optimizer_name`; reisoseg.optimizers) under v2's poly schedule;
- EM defect augmentation (reisoseg.augmentation), opt-in (`em_augmentation`): each training sample gets the section
  defects first, before v2's own spatial and intensity transforms.
"""
from __future__ import annotations

import os
from time import time
from typing import Any, Sequence

import torch
from batchgeneratorsv2.transforms.base.basic_transform import BasicTransform
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler

from reisoseg.augmentation import SectionDefect, em_defects
from reisoseg.checkpointing import DEFAULT_CHECKPOINT_MINUTES, StopRequested, durable
from reisoseg.errors import TrainingStopped
from reisoseg.io.atomic import atomic_file
from reisoseg.optimizers import adamw

LATEST_CHECKPOINT = "checkpoint_latest.pth"


def snapshot_checkpoint(epochs_done: int) -> str:
    """The snapshot kept after `epochs_done` epochs (`V2TrainingMixin.snapshot_every_epochs`)."""
    return f"checkpoint_ep_{epochs_done:03d}.pth"


class _BudgetSpent(Exception):
    """Raised at the start of an epoch beyond the fitted count: v2's loop fixes its range when it starts."""


class SectionDefectsTransform(BasicTransform):
    """reisoseg.augmentation's section defects as a batchgeneratorsv2 transform: v2 augments one sample at a time,
    as tensors of shape (channels, z, y, x)."""

    def __init__(self, defects: Sequence[SectionDefect]):
        super().__init__()
        self.defects = list(defects)

    def __call__(self, **data_dict: Any) -> dict[str, Any]:
        segmentation = data_dict.get("segmentation")
        sample = {"data": data_dict["image"].numpy()[None],
                  "seg": None if segmentation is None else segmentation.numpy()[None]}
        for defect in self.defects:
            sample = defect(**sample)
        data_dict["image"] = torch.from_numpy(sample["data"][0])
        if segmentation is not None:
            data_dict["segmentation"] = torch.from_numpy(sample["seg"][0])
        return data_dict

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.defects})"


class V2TrainingMixin:
    """Mixed into nnU-Net v2 trainers (before `nnUNetTrainer`); see the module docstring. No `__init__`: v2 records
    its trainers' constructor arguments from the signature of the most derived one."""

    checkpoint_minutes: float = DEFAULT_CHECKPOINT_MINUTES
    time_budget_s: float | None = None
    optimizer_name: str = "sgd"  # one of reisoseg.optimizers.OPTIMIZERS
    em_augmentation: bool = False  # section defects before v2's augmentation of every training sample
    snapshot_every_epochs: int | None = None  # keep snapshot_checkpoint(N), (2N), ... while training

    def get_training_transforms(self, *args: Any, **kwargs: Any) -> BasicTransform:
        """v2's training transforms (a static method there), with the section defects first if asked."""
        transforms = super().get_training_transforms(*args, **kwargs)
        if self.em_augmentation:
            transforms.transforms.insert(0, SectionDefectsTransform(em_defects()))
            self.print_to_log_file(f"EM defect augmentation: {transforms.transforms[0]}")
        return transforms

    def configure_optimizers(self):
        """v2's SGD and poly schedule, or AdamW under the same schedule."""
        if self.optimizer_name != "adamw":
            return super().configure_optimizers()
        optimizer = adamw(self.network.parameters(), self.initial_lr, self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def save_checkpoint(self, filename: str) -> None:
        """v2's checkpoint, written to a temporary sibling, flushed and renamed into place."""
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)
            return
        with atomic_file(filename) as temporary:
            super().save_checkpoint(str(temporary))
            durable(temporary)

    def _save_at(self, filename: str, next_epoch: int) -> None:
        """A checkpoint in the fold's folder from which training would resume at `next_epoch` (v2 stores
        `current_epoch + 1`)."""
        current = self.current_epoch
        self.current_epoch = next_epoch - 1
        try:
            self.save_checkpoint(os.path.join(self.output_folder, filename))
        finally:
            self.current_epoch = current

    def _save_latest(self, next_epoch: int) -> None:
        """`checkpoint_latest.pth`, from which -c resumes at `next_epoch`."""
        self._save_at(LATEST_CHECKPOINT, next_epoch)
        self._last_save = time()

    def run_training(self):
        """v2's training loop, ended early by the time budget (with v2's final checkpoint) or by SIGTERM (with
        `checkpoint_latest.pth` and TrainingStopped)."""
        self._started = self._last_save = time()
        self._first_epoch = self.current_epoch  # -c: this run's budget and epochs
        self._stop = StopRequested()
        with self._stop.installed():
            try:
                super().run_training()
            except _BudgetSpent:
                self.on_train_end()
            except TrainingStopped:
                self._save_latest(self.current_epoch)
                for loader in (self.dataloader_train, self.dataloader_val):
                    if hasattr(loader, "_finish"):  # v2's background augmentation workers
                        loader._finish()
                raise

    def on_epoch_start(self):
        if self.current_epoch >= self.num_epochs:
            raise _BudgetSpent
        super().on_epoch_start()

    def train_step(self, batch: dict) -> dict:
        if self._stop:
            raise TrainingStopped(f"{self._stop.signal_name} during epoch {self.current_epoch}: "
                                  f"{os.path.join(self.output_folder, LATEST_CHECKPOINT)} holds the weights so far "
                                  f"and resumes at epoch {self.current_epoch}; continue with -c")
        return super().train_step(batch)

    def on_epoch_end(self):
        """Refit the epochs to the time budget, then v2's end of epoch, then the snapshot and
        `checkpoint_latest.pth` if they are due."""
        if self.time_budget_s is not None:
            self._fit_epochs_to_budget(time() - self._started)
        super().on_epoch_end()  # counts the epoch as done
        done = self.current_epoch
        if self.snapshot_every_epochs and done % self.snapshot_every_epochs == 0 and done < self.num_epochs:
            self._save_at(snapshot_checkpoint(done), done)
        if self.current_epoch < self.num_epochs and time() - self._last_save >= 60.0 * self.checkpoint_minutes:
            self._save_latest(self.current_epoch)

    def _fit_epochs_to_budget(self, elapsed: float) -> None:
        """Epochs that still fit the remaining budget at the mean epoch time of this run (the poly LR follows)."""
        per_epoch = elapsed / (self.current_epoch + 1 - self._first_epoch)
        fitted = min(self.num_epochs, self.current_epoch + 1 + int(max(0.0, self.time_budget_s - elapsed) // per_epoch))
        if fitted != self.num_epochs:
            self.print_to_log_file(f"time budget {self.time_budget_s:.0f} s, {per_epoch:.1f} s per epoch: "
                                   f"{fitted} epochs")
            self.num_epochs = fitted
            self.lr_scheduler.max_steps = fitted
