"""Training and validation as a library call; the `reisoseg train` command only parses arguments. Importing this
module imports nnU-Net (reisoseg.nnunet_v1.training_options holds what a caller needs before that)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch
from nnunet.run.default_configuration import get_default_configuration

from reisoseg.console import progress_bar
from reisoseg.devices import resolve_device
from reisoseg.errors import ReIsoSegError
from reisoseg.instances.target import store_instance_settings
from reisoseg.layout import (
    BEST_CHECKPOINT,
    FINAL_CHECKPOINT,
    LATEST_CHECKPOINT,
    checkpoint_file,
)
from reisoseg.layout import plans_file as layout_plans_file
from reisoseg.network.anisotropy import PatchDoesNotFit
from reisoseg.nnunet_v1 import distributed
from reisoseg.nnunet_v1.compat import finish_augmenters, redirected
from reisoseg.nnunet_v1.em_training import EMTrainingMixin
from reisoseg.nnunet_v1.model_files import load_checkpoint_into
from reisoseg.nnunet_v1.plans import write_derived_plans
from reisoseg.nnunet_v1.tasks import parse_fold, require_environment, resolve_task
from reisoseg.nnunet_v1.trainers import ReIsoSegTrainer
from reisoseg.nnunet_v1.training_options import CONFIGURATIONS, TrainingOptions, effective_plans_identifier
from reisoseg.safe_loading import UnsafePickleError


def _require_our_trainer(trainer, option: str, otherwise: str) -> None:
    """ReIsoSegError unless `trainer` has our additions (EMTrainingMixin); `otherwise` says what it does instead."""
    if not isinstance(trainer, EMTrainingMixin):
        raise ReIsoSegError(f"`{option}` needs one of our trainers (a ReIsoSeg trainer, or nnUNetTrainerV2EM for the "
                            f"baseline); {type(trainer).__name__} {otherwise}")


def _configure(trainer, options: TrainingOptions, device: torch.device) -> None:
    if options.checkpoint_minutes is not None:
        _require_our_trainer(trainer, "checkpoint_minutes", "saves every 50 epochs")
        trainer.checkpoint_minutes = options.checkpoint_minutes
    if options.em_augmentation:
        _require_our_trainer(trainer, "em_augmentation", "has no EM defect augmentation")
        trainer.em_augmentation = True
    if options.optimizer is not None:
        _require_our_trainer(trainer, "optimizer", "uses nnU-Net's SGD")
        trainer.optimizer_name = options.optimizer
    if options.initial_lr is not None:
        trainer.initial_lr = options.initial_lr
    if options.cpu_bf16:
        _require_our_trainer(trainer, "cpu_bf16", "trains in float32 on the CPU")
        if device.type != "cpu":
            raise ReIsoSegError(f"`cpu_bf16` is for training on the CPU, not on {device.type} (CUDA trains in fp16 "
                                f"mixed precision already)")
        trainer.cpu_bf16 = True

    if options.time_budget_minutes is not None:
        _require_our_trainer(trainer, "time_budget_minutes", "trains for `epochs`")
        trainer.time_budget_s = 60.0 * options.time_budget_minutes
    if options.ani_weight is not None:
        if not isinstance(trainer, ReIsoSegTrainer):
            raise ReIsoSegError(f"`ani_weight` weighs ReIsoSeg's two branches; {type(trainer).__name__} has one")
        trainer.ani_weight = options.ani_weight
    if options.gpu_memory_gb is not None:
        _require_our_trainer(trainer, "gpu_memory_gb", "keeps the patch nnU-Net's planner chose")
        trainer.memory_budget_bytes = options.gpu_memory_gb * 2**30
    elif device.type == "cuda" and isinstance(trainer, EMTrainingMixin):
        trainer.memory_budget_bytes = float(torch.cuda.get_device_properties(device).total_memory)
    if device.type not in ("cpu", "cuda") and not isinstance(trainer, ReIsoSegTrainer):
        # nnU-Net's predictor moves Generic_UNet's inputs to CUDA or leaves them on the CPU, nowhere else
        raise ReIsoSegError(f"{type(trainer).__name__} trains Generic_UNet, which nnU-Net runs on cpu or cuda only")
    if isinstance(trainer, EMTrainingMixin):
        trainer.device = device
    if options.epochs is not None:
        trainer.max_num_epochs = options.epochs
    if options.iterations_per_epoch is not None:
        trainer.num_batches_per_epoch = options.iterations_per_epoch
    if options.validation_iterations() is not None:
        trainer.num_val_batches_per_epoch = options.validation_iterations()
    if options.snapshot_every_epochs is not None:
        trainer.save_every, trainer.save_latest_only = options.snapshot_every_epochs, False


def _epoch_reporter(bar):
    """What a trainer calls at the end of each epoch (`EMTrainingMixin.epoch_ended`): advance `bar` with the loss
    and the online pseudo-Dice, and its total to the epochs that will run (a time budget refits them)."""
    def report(trainer) -> None:
        bar.total = trainer.max_num_epochs
        shown = {"loss": trainer.all_tr_losses[-1] if trainer.all_tr_losses else None,
                 "pseudo-Dice": trainer.all_val_eval_metrics[-1] if trainer.all_val_eval_metrics else None}
        bar.set_postfix_str(" ".join(f"{k} {float(v):.3f}" for k, v in shown.items() if v is not None), refresh=False)
        bar.update(trainer.epoch + 1 - bar.n)

    return report


def run_training(configuration: str, trainer_name: str, task: str, fold: str | int,
                 options: TrainingOptions | None = None) -> str:
    """Train (or only validate) one fold, as `nnUNet_train` does; returns the fold's output folder.

    `trainer_name` is one of ours (`ReIsoSegTrainer`, `ReIsoSegRMA{1,2,4,8}V6Trainer`) or any nnU-Net v1 trainer.
    """
    options = options or TrainingOptions()
    require_environment()
    if configuration not in CONFIGURATIONS:
        raise ReIsoSegError(f"unknown configuration {configuration!r}: use one of {', '.join(CONFIGURATIONS)}")
    task_name = resolve_task(task)
    fold = parse_fold(fold)
    device = resolve_device(options.device)  # once per call, before nnU-Net starts (it hides GPUs for cpu)
    with redirected():
        return _train(configuration, trainer_name, task_name, fold, options, device)


def _train(configuration: str, trainer_name: str, task_name: str, fold: str | int, options: TrainingOptions,
           device) -> str:
    """`run_training` inside nnU-Net, once the arguments are checked."""
    ranks = None
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun: one rank of several
        ranks = distributed.ranks_from_environment()
        if options.validation_only:
            raise ReIsoSegError("validation (-val) runs in one process: start it without torchrun or --gpus")
        device = distributed.start(ranks, device.type)

    plans_identifier = effective_plans_identifier(options)
    if plans_identifier != options.plans_identifier:
        write_derived_plans(task_name, plans_identifier, patch_size=options.patch_size, batch_size=options.batch_size,
                            base_identifier=options.plans_identifier)
    plans_file = str(layout_plans_file(os.environ["nnUNet_preprocessed"], task_name, plans_identifier,
                                       three_d=configuration != "2d"))
    if not os.path.isfile(plans_file):
        raise ReIsoSegError(f"{plans_file}: plans not found; run nnUNet_plan_and_preprocess -t "
                            f"{int(task_name[4:7])} first")
    try:
        plans_file, output_folder, dataset_directory, batch_dice, stage, trainer_class = get_default_configuration(
            configuration, task_name, trainer_name, plans_identifier)
    except RuntimeError as error:
        raise ReIsoSegError(str(error).splitlines()[0]) from error
    if trainer_class is None:
        raise ReIsoSegError(f"unknown trainer {trainer_name!r}: use ReIsoSegTrainer, ReIsoSegRMA1V6Trainer, "
                            f"ReIsoSegRMA2V6Trainer, ReIsoSegRMA4V6Trainer, ReIsoSegRMA8V6Trainer, nnUNetTrainerV2EM "
                            f"or an nnU-Net v1 trainer such as nnUNetTrainerV2")
    use_fp16 = not options.fp32 and device.type == "cuda"
    _seed(options.seed, ranks)
    trainer = trainer_class(plans_file, fold, output_folder=output_folder, dataset_directory=dataset_directory,
                            batch_dice=batch_dice, stage=stage, unpack_data=True,
                            deterministic=options.deterministic, fp16=use_fp16)
    _configure(trainer, options, device)
    main_process = ranks is None or ranks.main
    if ranks is not None:
        if not isinstance(trainer, EMTrainingMixin):
            raise ReIsoSegError(f"{trainer_name}: distributed training needs one of our trainers (a ReIsoSeg trainer, "
                                f"or nnUNetTrainerV2EM for the baseline); nnU-Net v1's own is nnUNetTrainerV2_DDP, "
                                f"run by nnU-Net's scripts")
        trainer.ranks = ranks
    if main_process:
        store_instance_settings(Path(plans_file).parent / "dataset.json", Path(trainer.output_folder).parent)
    try:
        try:
            if not main_process:
                distributed.barrier()  # rank 0 initialises first: it unpacks the data and writes the splits
            trainer.initialize(not options.validation_only)
            if ranks is not None and main_process:
                distributed.barrier()
            if ranks is not None:
                trainer.distribute()
        except PatchDoesNotFit as error:  # a pattern or memory budget that the planned patch cannot meet
            raise ReIsoSegError(f"{trainer_name} on {task_name}: {error}") from error
        if options.validation_only:
            path = str(checkpoint_file(trainer.output_folder, BEST_CHECKPOINT if options.valbest else FINAL_CHECKPOINT))
            if not os.path.isfile(path):
                raise ReIsoSegError(f"{path}: checkpoint not found; train fold {fold} first")
            _load_checkpoint(trainer, path, train=False)
        else:
            if options.continue_training:
                found = [path for name in (FINAL_CHECKPOINT, LATEST_CHECKPOINT, BEST_CHECKPOINT)
                         if (path := checkpoint_file(trainer.output_folder, name)).is_file()]
                if not found:
                    raise ReIsoSegError(f"{trainer.output_folder}: no checkpoint to continue from")
                _load_checkpoint(trainer, found[0], train=True)  # nnU-Net's order of preference
            # nnU-Net's own trainers report their epochs in engine.log only
            shown = options.progress and main_process and isinstance(trainer, EMTrainingMixin)
            with progress_bar(trainer.max_num_epochs, "training", "epoch", enabled=shown,
                              initial=trainer.epoch) as bar:
                if shown:
                    trainer.epoch_ended = _epoch_reporter(bar)
                trainer.run_training()
        trainer.network.eval()
        if options.run_validation and main_process:
            trainer.validate(save_softmax=options.npz, validation_folder_name=options.validation_folder,
                             run_postprocessing_on_folds=not options.disable_postprocessing_on_folds)
    finally:
        finish_augmenters(trainer)
        if ranks is not None:
            distributed.stop()
    return trainer.output_folder


def _load_checkpoint(trainer, path: str | os.PathLike, train: bool) -> None:
    """Any trainer's checkpoint, read weights-only (never through nnU-Net's own `torch.load`)."""
    try:
        load_checkpoint_into(trainer, path, train)
    except UnsafePickleError as error:
        raise ReIsoSegError(f"refusing to load a model file: {error}") from error


def _seed(seed: int | None, ranks) -> None:
    """Seed network initialisation and patch sampling (augmentation workers fork the seeded state). Over several
    ranks, torch's RNG gets the same seed everywhere (one PI transform per step, as in one process) and numpy's
    and Python's one per rank (different patches)."""
    if ranks is not None:
        seed = distributed.shared_seed(seed)
        torch.manual_seed(seed)
        random.seed(seed + ranks.rank)
        np.random.seed(seed + ranks.rank)
    elif seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
