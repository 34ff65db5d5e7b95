"""What training on real EM work needs beyond nnU-Net v1's trainer, for ours and for the baseline alike.

`EMTrainingMixin` goes before `nnUNetTrainerV2` in a trainer's bases (`ReIsoSegTrainer`, `nnUNetTrainerV2EM`):
- checkpoints that survive (reisoseg.nnunet_v1.checkpoints): `model_latest` at the end of every epoch once
  `checkpoint_minutes` have passed since the last save (0: every epoch), written atomically, holding the RNG state
  beside nnU-Net's epoch, optimizer, grad scaler and curves; SIGTERM saves the current state and stops with
  `TrainingStopped`;
- sparse annotation (reisoseg.nnunet_v1.sparse): with a label named `ignore` in dataset.json, the network
  predicts the real classes, ignored voxels are left out of the loss of every head and of the online pseudo-Dice,
  and foreground oversampling aims at annotated voxels;
- EM defect augmentation (reisoseg.augmentation), opt-in (`em_augmentation`, `reisoseg train --em_augmentation`)
  so that the reference method stays the default: missing, shifted, blurred and contrast-jumping sections, applied
  before nnU-Net's own augmentation of the training batches;
- the optimizer: nnU-Net's SGD by default, or AdamW (`optimizer_name`; reisoseg.optimizers);
  a checkpoint records which, and training continues only with the same one;
- a time budget (`time_budget_s`): after each epoch the remaining epochs are refitted to the budget at this run's
  mean epoch time, so that the poly schedule ends when the budget does; the same for every trainer, so that the
  method and the baseline can be compared at equal wall time;
- the device (`device`: CUDA, MPS or CPU, not only nnU-Net's CUDA-or-CPU) and one training step on it: fp16
  autocast with a grad scaler on CUDA, bf16 autocast on the CPU if asked for (`cpu_bf16`), gradients clipped at
  nnU-Net's norm, through DDP when distributed;
- a memory budget (`memory_budget_bytes`): the patch shrinks until a training step's estimate fits it;
- several processes (reisoseg.nnunet_v1.distributed): the global batch split over the ranks, DDP around the
  network, batch Dice and pseudo-Dice over the global batch, and one writer: only rank 0 logs, plots and saves.

A trainer whose network is not nnU-Net's Generic_UNet says so through `per_head_loss`, `patch_divisor`,
`estimate_step_memory` and `reported_loss`.
"""
from __future__ import annotations

import os
import pickle
from time import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
from nnunet.utilities.to_torch import maybe_to_torch
from torch.nn.parallel import DistributedDataParallel

from reisoseg.augmentation import DefectedBatches, em_defects
from reisoseg.checkpointing import DEFAULT_CHECKPOINT_MINUTES, StopRequested, restore_rng_state, rng_state
from reisoseg.devices import cpu_computes_bf16, resolve_device
from reisoseg.errors import ReIsoSegError, TrainingStopped
from reisoseg.io.atomic import atomic_file
from reisoseg.layout import LATEST_CHECKPOINT, checkpoint_file
from reisoseg.network.anisotropy import PatchDoesNotFit
from reisoseg.network.memory import MemoryEstimate, fit_patch_to_memory
from reisoseg.nnunet_v1 import distributed
from reisoseg.nnunet_v1.checkpoints import remove_unfinished_writes, write_checkpoint
from reisoseg.nnunet_v1.compat import scoring_annotated_voxels
from reisoseg.nnunet_v1.model_files import load_checkpoint_into
from reisoseg.nnunet_v1.network import baseline_divisor, baseline_step_memory
from reisoseg.nnunet_v1.sparse import (
    IGNORE_KEY,
    DiceCEWithIgnore,
    annotated_locations,
    dataset_ignore_label,
    output_classes,
    section_counts,
    without_ignored,
)
from reisoseg.optimizers import adamw

GRADIENT_CLIP_NORM = 12.0  # nnUNetTrainerV2's


class EMTrainingMixin:
    """Mixed into nnU-Net v1 trainers (before `nnUNetTrainerV2`); see the module docstring."""

    em_augmentation: bool = False  # add reisoseg.augmentation.em_defects() to the training augmentation
    optimizer_name: str = "sgd"  # one of OPTIMIZERS
    cpu_bf16: bool = False  # on the CPU, train in bfloat16 autocast (no grad scaler: bf16 has float32's range)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.checkpoint_minutes = DEFAULT_CHECKPOINT_MINUTES
        self.ranks = None  # reisoseg.nnunet_v1.distributed.Ranks when torchrun started several processes
        self._stop = StopRequested()
        self._last_save = 0.0
        self.ignore_label: int | None = None  # the label value of unannotated voxels, from the plans
        self.time_budget_s: float | None = None  # if set, the epoch count is fitted to it after each epoch
        self.epoch_ended: Callable[[Any], None] | None = None  # called with the trainer after each epoch
        self._training_started: float | None = None
        self._first_epoch = 0
        self._epoch_cap = 0
        self.device: torch.device | None = None  # set by run_training; else the best available, at initialize
        self.memory_budget_bytes: float | None = None  # if set, the patch is fitted to it when training starts
        self._training = False
        self._distributed_network = None  # DistributedDataParallel around self.network, for training steps

    @property
    def writes_files(self) -> bool:
        """Only rank 0 of a distributed run writes logs, checkpoints and figures."""
        return self.ranks is None or self.ranks.main

    def print_to_log_file(self, *args, **kwargs):
        if self.writes_files:
            super().print_to_log_file(*args, **kwargs)

    def plot_progress(self):
        if self.writes_files:
            super().plot_progress()

    def plot_network_architecture(self):
        if self.writes_files:
            super().plot_network_architecture()

    def save_debug_information(self):
        """nnU-Net's debug.json and the model folder's copy of the plans, which carries the ignore label if any
        (nnU-Net copies the plans file, which lacks it)."""
        if not self.writes_files:
            return
        super().save_debug_information()
        if self.ignore_label is not None:
            with atomic_file(os.path.join(self.output_folder_base, "plans.pkl")) as temporary:
                temporary.write_bytes(pickle.dumps(self.plans))

    # sparse annotation

    def process_plans(self, plans):
        """nnU-Net's plans, with the ignore label of the task's dataset.json recorded in them when training (the
        checkpoints store these plans, so prediction elsewhere knows it) and left out of the predicted classes."""
        if plans.get(IGNORE_KEY) is None:
            found = dataset_ignore_label(self.dataset_directory)
            if found is not None:
                plans[IGNORE_KEY] = found
        super().process_plans(plans)
        self.ignore_label = plans.get(IGNORE_KEY)
        self.num_classes = output_classes(plans)
        if self.ranks is not None:
            self.batch_size = distributed.split_batch(self.batch_size, self.ranks)  # this rank's share

    def initialize(self, training=True, force_load_plans=False):
        """nnU-Net's initialisation on `device` (fp16 and pinned memory on CUDA only); with an ignore label, the loss
        made blind to ignored voxels and foreground oversampling aimed at annotated ones."""
        first = not self.was_initialized
        self._training = training  # the patch is fitted to the memory budget only for training
        if self.device is None:
            self.device = resolve_device()
        self.pin_memory = self.device.type == "cuda"
        self.fp16 = self.fp16 and self.device.type == "cuda"
        super().initialize(training, force_load_plans)
        if not first:
            return
        if self.cpu_bf16 and training:
            emulated = "" if cpu_computes_bf16() else ", which lacks bfloat16 instructions: slower than float32 here"
            self.print_to_log_file(f"training steps in bfloat16 autocast on the CPU (cpu_bf16){emulated}")
        if self.ignore_label is not None:
            self.loss.loss = DiceCEWithIgnore(self.loss.loss, self.ignore_label)
            if training:
                self._aim_sampling_at_annotated_voxels()

    def get_basic_generators(self):
        """nnU-Net's data loaders; with `em_augmentation`, the training batches get EM section defects before
        nnU-Net's spatial and intensity augmentation."""
        training, validation = super().get_basic_generators()
        if self.em_augmentation:
            training = DefectedBatches(training, em_defects())
            self.print_to_log_file(f"EM defect augmentation: {training.defects}")
        return training, validation

    def _aim_sampling_at_annotated_voxels(self) -> None:
        """nnU-Net samples a third of each batch around voxels of a random foreground class, the ignore label
        included; that class's locations become annotated voxels (of any class, background too)."""
        cases = {**self.dataset_tr, **self.dataset_val}
        annotated = total = 0
        for case in cases.values():
            if "properties" not in case:  # nnU-Net reads properties from disk for 1000+ cases
                self.print_to_log_file("sparse labels: too many cases to aim sampling at annotated voxels")
                return
            data = case["data_file"][:-len(".npz")] + ".npy"
            segmentation = np.load(data, mmap_mode="r")[-1] if os.path.isfile(data) else \
                np.load(case["data_file"])["data"][-1]
            per_section, inside = section_counts(segmentation, self.ignore_label)
            case["properties"]["class_locations"][self.ignore_label] = annotated_locations(
                segmentation, self.ignore_label, per_section=per_section)
            annotated, total = annotated + int(per_section.sum()), total + int(inside.sum())
        self.print_to_log_file(f"sparse labels: {annotated / max(total, 1):.1%} of the training voxels annotated "
                               f"(label {self.ignore_label} ignored); oversampled patches aimed at annotated voxels")

    # the network, its patch and its step

    def setup_DA_params(self):
        """Fit the patch to the memory budget when training (the last hook before nnU-Net sizes its augmentation and
        batches from the patch), then nnU-Net's augmentation settings."""
        if self._training:
            self._fit_patch_to_memory()
        super().setup_DA_params()

    def patch_divisor(self) -> tuple[int, int, int]:
        """What the network needs each patch axis divisible by."""
        return baseline_divisor(self)

    def estimate_step_memory(self, patch_size: tuple[int, int, int]) -> MemoryEstimate:
        """Peak memory of one training step at `patch_size` and this rank's batch size."""
        return baseline_step_memory(self, patch_size)

    def _fit_patch_to_memory(self) -> None:
        """Shrink the patch to the memory budget, if any, and log the estimated memory of a training step."""
        patch = tuple(int(v) for v in self.patch_size)
        if self.memory_budget_bytes is None:
            estimate = self.estimate_step_memory(patch)
        else:
            spacing = self.plans["plans_per_stage"][self.stage]["current_spacing"]
            try:
                patch, estimate = fit_patch_to_memory(patch, self.patch_divisor(), spacing, self.memory_budget_bytes,
                                                      self.estimate_step_memory)
            except PatchDoesNotFit as error:
                raise ReIsoSegError(f"{type(self).__name__} at batch {self.batch_size}: {error}") from error
            self.patch_size = np.array(patch)
        budget = "" if self.memory_budget_bytes is None else f" of a {self.memory_budget_bytes / 2**30:.1f} GiB budget"
        self.print_to_log_file(f"training patch {list(patch)}, batch {self.batch_size}: about {estimate.gib:.2f} GiB "
                               f"per step{budget}")

    def initialize_network(self):
        """nnU-Net's network, on `device`."""
        super().initialize_network()
        self.network.to(self.device)

    def _maybe_init_amp(self):
        if self.fp16 and self.amp_grad_scaler is None:
            self.amp_grad_scaler = torch.amp.GradScaler("cuda")

    def per_head_loss(self) -> torch.nn.Module:
        """The Dice + cross-entropy applied to each deep-supervision head."""
        return self.loss.loss

    def head_weights(self) -> Sequence[float]:
        """The weight of each deep-supervision head in the loss."""
        return self.loss.weight_factors

    def distribute(self) -> None:
        """DDP around the network and the batch Dice over the global batch. Called on every rank once all are
        initialised (DDP's constructor is a collective)."""
        head_loss = self.per_head_loss()
        dice = head_loss.dc
        head_loss.dc = distributed.GlobalBatchDice(dice.apply_nonlin, dice.batch_dice, dice.do_bg, dice.smooth)
        self._distributed_network = DistributedDataParallel(
            self.network, device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=not all(self.head_weights()))  # a head weighted 0 gets no gradient

    def run_iteration(self, data_generator, do_backprop=True, run_online_evaluation=False):
        """One training or validation step on `device`, as nnUNetTrainerV2's (fp16 with the grad scaler on CUDA,
        bf16 autocast on the CPU if asked for, gradients clipped), through DDP when distributed; stops first if
        SIGTERM arrived."""
        self.stop_if_requested()
        batch = next(data_generator)
        data = maybe_to_torch(batch["data"]).to(self.device, non_blocking=True)
        target = [t.to(self.device, non_blocking=True) for t in maybe_to_torch(batch["target"])]
        self.optimizer.zero_grad(set_to_none=True)
        network = self._distributed_network if do_backprop and self._distributed_network else self.network
        with torch.autocast(self.device.type, dtype=torch.float16 if self.fp16 else torch.bfloat16,
                            enabled=self.fp16 or self.cpu_bf16):
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
        if run_online_evaluation:
            self.run_online_evaluation(output, target)
        return np.float32(self.reported_loss(loss.detach(), do_backprop))

    def reported_loss(self, loss: torch.Tensor, training: bool) -> float:
        """The loss nnU-Net's curves record for a step."""
        return float(loss)

    def finish_online_evaluation(self):
        """nnU-Net's pseudo-Dice, over the validation batches of every rank."""
        if self.ranks is not None:
            for name in ("online_eval_tp", "online_eval_fp", "online_eval_fn"):
                setattr(self, name, [distributed.all_reduce_sum(np.sum(getattr(self, name), 0))])
        super().finish_online_evaluation()

    def run_online_evaluation(self, output, target):
        """nnU-Net's pseudo-Dice, ignored voxels left out."""
        if self.ignore_label is not None:
            logits, labels = without_ignored(output[0], target[0], self.ignore_label)
            output, target = [logits, *output[1:]], [labels, *target[1:]]
        return super().run_online_evaluation(output, target)

    def validate(self, *args, **kwargs):
        """nnU-Net's fold validation; with an ignore label, unannotated voxels count in no score."""
        if self.ignore_label is None:
            return super().validate(*args, **kwargs)
        with scoring_annotated_voxels(self.ignore_label):
            return super().validate(*args, **kwargs)

    def initialize_optimizer_and_scheduler(self):
        """nnU-Net's SGD, or AdamW at `initial_lr` with nnU-Net's weight decay; the poly schedule sets both."""
        if self.optimizer_name == "adamw":
            self.optimizer = adamw(self.network.parameters(), self.initial_lr, self.weight_decay)
            self.lr_scheduler = None
        else:
            super().initialize_optimizer_and_scheduler()

    # checkpoints

    def checkpoint_state(self, completed_epochs: int, save_optimizer: bool = True) -> dict[str, Any]:
        """What a checkpoint holds after `completed_epochs` epochs: the keys nnU-Net v1's `load_checkpoint_ram`
        reads (its curves cut to those epochs) and the RNG state."""
        curves = (self.all_tr_losses, self.all_val_losses, self.all_val_losses_tr_mode, self.all_val_eval_metrics)
        state = {
            "epoch": completed_epochs,
            "state_dict": {key: value.cpu() for key, value in self.network.state_dict().items()},
            "optimizer_state_dict": self.optimizer.state_dict() if save_optimizer else None,
            "lr_scheduler_state_dict": None,  # nnUNetTrainerV2's poly schedule follows the epoch
            "plot_stuff": tuple(list(curve[:completed_epochs]) for curve in curves),
            "best_stuff": (self.best_epoch_based_on_MA_tr_loss, self.best_MA_tr_loss_for_patience,
                           self.best_val_eval_criterion_MA),
            "rng": rng_state(getattr(self, "device", None)),
            "optimizer": self.optimizer_name,
        }
        if self.amp_grad_scaler is not None:
            state["amp_grad_scaler"] = self.amp_grad_scaler.state_dict()
        return state

    def save_checkpoint(self, fname, save_optimizer=True):
        """nnU-Net's checkpoint of the epoch that just ended, written atomically (rank 0 only)."""
        self._save(fname, self.epoch + 1, save_optimizer)

    def _save(self, path: str | os.PathLike, completed_epochs: int, save_optimizer: bool = True) -> None:
        if not self.writes_files:
            return
        started = time()
        info = {"init": self.init_args, "name": type(self).__name__, "class": str(type(self)), "plans": self.plans}
        write_checkpoint(path, self.checkpoint_state(completed_epochs, save_optimizer), info)
        self.print_to_log_file(f"saved {os.path.basename(path)} after {completed_epochs} epochs "
                               f"({time() - started:.1f} s)")

    def load_checkpoint(self, fname, train=True):
        """nnU-Net's, with the file read by torch's weights-only loader whatever the environment says."""
        load_checkpoint_into(self, fname, train)

    def load_checkpoint_ram(self, checkpoint, train=True):
        """nnU-Net's loading, then the RNG state when training continues (with the checkpoint's optimizer only)."""
        saved_with = checkpoint.get("optimizer", "sgd")
        if train and saved_with != self.optimizer_name:
            raise ReIsoSegError(f"this checkpoint was trained with the {saved_with} optimizer; continue it with "
                                f"`optimizer` {saved_with}, not {self.optimizer_name}")
        super().load_checkpoint_ram(checkpoint, train)
        if train and "rng" in checkpoint:
            restore_rng_state(checkpoint["rng"], None if self.ranks is None else self.ranks.rank)

    def maybe_save_checkpoint(self):
        """Snapshots every `save_every` epochs if asked for (`save_latest_only` False, nnU-Net's names), and
        `model_latest` once `checkpoint_minutes` have passed since the last save."""
        if not self.save_latest_only and (self.epoch + 1) % self.save_every == 0:
            self.save_checkpoint(os.path.join(self.output_folder, f"model_ep_{self.epoch + 1:03d}.model"))
        if time() - self._last_save >= 60.0 * self.checkpoint_minutes:
            self.save_checkpoint(str(checkpoint_file(self.output_folder, LATEST_CHECKPOINT)))
            self._last_save = time()

    # stopping on SIGTERM

    def stop_if_requested(self) -> None:
        """Between iterations: raise TrainingStopped once SIGTERM arrived (on any rank: every rank stops at the same
        iteration, so none waits in a collective for a rank that left)."""
        requested = bool(self._stop)
        if self.ranks is not None:
            requested = bool(distributed.all_reduce_sum(np.array([float(requested)]))[0] > 0)
        if requested:
            raise TrainingStopped(f"{self._stop.signal_name or 'SIGTERM'} during epoch {self.epoch}: "
                                  f"{checkpoint_file(self.output_folder, LATEST_CHECKPOINT)} holds the weights so far "
                                  f"and resumes at epoch {self.epoch}; continue with -c")

    def run_training(self):
        """nnU-Net's training loop with SIGTERM handled: the current state is saved as `model_latest` (this epoch
        counted as not done, so `-c` repeats it) and TrainingStopped is raised."""
        if self.writes_files:
            for path in remove_unfinished_writes(self.output_folder):
                self.print_to_log_file(f"removed {path.name}, left by an interrupted checkpoint write")
        self._last_save = time()
        self._training_started, self._first_epoch = time(), self.epoch  # -c: this run's budget and epochs
        self._epoch_cap = self.max_num_epochs
        with self._stop.installed():
            try:
                return super().run_training()
            except TrainingStopped:
                self._save(checkpoint_file(self.output_folder, LATEST_CHECKPOINT), self.epoch)
                raise

    def on_epoch_end(self):
        """With a time budget, refit the remaining epochs (every rank to rank 0's count) before nnU-Net's end of
        epoch, which decides whether to go on; then tell `epoch_ended` (a progress bar)."""
        if self.time_budget_s is not None and self._training_started is not None:
            self._fit_epochs_to_budget(time() - self._training_started)
            if self.ranks is not None:
                # every rank stops at rank 0's epoch
                self.max_num_epochs = distributed.broadcast_int(self.max_num_epochs)
        continuing = super().on_epoch_end()
        if self.epoch_ended is not None:
            self.epoch_ended(self)
        return continuing

    def _fit_epochs_to_budget(self, elapsed: float) -> None:
        """Epochs that still fit the remaining budget at the mean epoch time of this run (the poly LR follows)."""
        per_epoch = elapsed / (self.epoch + 1 - self._first_epoch)
        fitted = self.epoch + 1 + int(max(0.0, self.time_budget_s - elapsed) // per_epoch)
        fitted = min(self._epoch_cap, fitted)
        if fitted != self.max_num_epochs:
            self.print_to_log_file(f"time budget {self.time_budget_s:.0f} s, {per_epoch:.1f} s per epoch: "
                                   f"{fitted} epochs")
            self.max_num_epochs = fitted
