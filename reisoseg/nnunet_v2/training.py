"""Training on nnU-Net v2 as a library call, for our trainers and v2's own `nnUNetTrainer` (the v2 baseline).

The trainer class is constructed here, not looked up by name through v2's package walk (which imports modules that
need a torchvision matching this torch). Checkpoints to continue from are read weights-only (reisoseg.safe_loading,
through reisoseg.nnunet_v2.compat), never by v2's own `torch.load(weights_only=False)`. The training layer of
reisoseg.nnunet_v2.em_training (time budget, durable checkpoints every N minutes, SIGTERM) is in our trainers and in
the baseline `nnUNetTrainerEM`, with the optimizer (SGD or AdamW) and the EM defect augmentation.
`patch_size`/`batch_size` train on plans derived for them (reisoseg.nnunet_v2.plans). A memory budget
(`gpu_memory_gb`, by default the GPU's on CUDA) shrinks the ReIsoSeg trainers' patch until a training step fits it;
v2's own planner sizes the baseline's (`nnUNetv2_plan_and_preprocess -gpu_memory_target`).
"""
from __future__ import annotations

import json
import os
import random
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import torch
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from reisoseg.devices import resolve_device
from reisoseg.errors import ReIsoSegError
from reisoseg.instances.target import store_instance_settings
from reisoseg.layout import V2_PLANS, v2_model_name, v2_plans_identifier
from reisoseg.nnunet_v1.training_options import TrainingOptions, effective_plans_identifier
from reisoseg.nnunet_v2.compat import checkpoints_read_safely
from reisoseg.nnunet_v2.em_training import V2TrainingMixin
from reisoseg.nnunet_v2.plans import write_derived_plans
from reisoseg.nnunet_v2.trainers import TRAINERS, ReIsoSegTrainer
from reisoseg.safe_loading import UnsafePickleError, safe_load_checkpoint

V2_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
SUPPORTED_OPTIONS = {"validation_only", "valbest", "continue_training", "npz", "plans_identifier", "patch_size",
                     "batch_size", "seed", "device", "epochs", "iterations_per_epoch", "val_iterations_per_epoch",
                     "ani_weight", "initial_lr", "run_validation", "progress", "validation_folder",
                     "disable_postprocessing_on_folds", "time_budget_minutes", "checkpoint_minutes", "optimizer",
                     "em_augmentation", "snapshot_every_epochs", "gpu_memory_gb"}
# need V2TrainingMixin
LAYER_OPTIONS = ("time_budget_minutes", "checkpoint_minutes", "optimizer", "em_augmentation", "snapshot_every_epochs")
CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_latest.pth", "checkpoint_best.pth")  # v2's order of preference


def require_v2_environment() -> None:
    missing = [name for name in V2_VARIABLES[1:] if not os.environ.get(name)]
    if missing:
        raise ReIsoSegError(f"nnU-Net v2 needs {' and '.join(missing)} set (export nnUNet_raw, nnUNet_preprocessed "
                            f"and nnUNet_results)")


def dataset_name(dataset: str | int) -> str:
    """`DatasetXXX_Name` from an id, a name or the full name; one line if v2 finds none."""
    try:
        return maybe_convert_to_dataset_name(int(dataset) if str(dataset).isdigit() else str(dataset))
    except RuntimeError as error:
        raise ReIsoSegError(str(error).splitlines()[0]) from error


def model_folder(configuration: str, trainer_name: str, dataset: str | int, plans: str = V2_PLANS) -> Path:
    """Where v2 keeps a model (nnUNet_results/DatasetXXX/TRAINER__PLANS__CONFIGURATION)."""
    require_v2_environment()
    results = Path(os.environ["nnUNet_results"])
    return results / dataset_name(dataset) / v2_model_name(trainer_name, plans, configuration)


def fold_output_folder(configuration: str, trainer_name: str, dataset: str | int, fold: str | int,
                       plans: str = V2_PLANS) -> Path:
    """Where v2 trains this fold (the model folder's fold_N)."""
    return model_folder(configuration, trainer_name, dataset, plans) / f"fold_{fold}"


def trained_plans_identifier(options: TrainingOptions) -> str:
    """The v2 plans a run trains with: the asked ones, or plans derived from them for `patch_size`/`batch_size`."""
    return effective_plans_identifier(replace(options, plans_identifier=v2_plans_identifier(options.plans_identifier)))


def _refuse_unsupported(options: TrainingOptions) -> None:
    defaults = TrainingOptions()
    asked = [field.name for field in fields(TrainingOptions) if field.name not in SUPPORTED_OPTIONS
             and getattr(options, field.name) != getattr(defaults, field.name)]
    if asked:
        raise ReIsoSegError(f"not on the nnU-Net v2 engine yet: {', '.join(f'`{name}`' for name in asked)} (use the "
                            f"v1 engine for these)")


def run_training(configuration: str, trainer_name: str, dataset: str | int, fold: str | int,
                 options: TrainingOptions | None = None) -> Path:
    """Train one fold on nnU-Net v2, as `nnUNetv2_train` does; returns the fold's output folder."""
    options = options or TrainingOptions()
    _refuse_unsupported(options)
    require_v2_environment()
    name = dataset_name(dataset)
    if trainer_name not in TRAINERS:
        raise ReIsoSegError(f"unknown trainer {trainer_name!r} on the v2 engine: use one of {', '.join(TRAINERS)}")
    if options.ani_weight is not None and not issubclass(TRAINERS[trainer_name], ReIsoSegTrainer):
        raise ReIsoSegError(f"`ani_weight` weighs ReIsoSeg's two branches; {trainer_name} has one")
    if options.gpu_memory_gb is not None and not issubclass(TRAINERS[trainer_name], ReIsoSegTrainer):
        raise ReIsoSegError(f"`gpu_memory_gb` fits ReIsoSeg's patch; {trainer_name} keeps the patch v2 planned "
                            f"(plan it with nnUNetv2_plan_and_preprocess -gpu_memory_target)")
    layered = [name for name in LAYER_OPTIONS if getattr(options, name) not in (None, False)]
    if layered and not issubclass(TRAINERS[trainer_name], V2TrainingMixin):
        raise ReIsoSegError(f"{', '.join(f'`{name}`' for name in layered)}: not in v2's own {trainer_name}; train "
                            f"the baseline as nnUNetTrainerEM (v2's trainer with our training layer)")
    preprocessed = Path(os.environ["nnUNet_preprocessed"]) / name
    asked_plans, plans_identifier = v2_plans_identifier(options.plans_identifier), trained_plans_identifier(options)
    if plans_identifier != asked_plans:
        write_derived_plans(preprocessed, asked_plans, plans_identifier, configuration,
                            patch_size=options.patch_size, batch_size=options.batch_size)
    plans_file = preprocessed / f"{plans_identifier}.json"
    if not plans_file.is_file():
        raise ReIsoSegError(f"{plans_file}: plans not found; run nnUNetv2_plan_and_preprocess -d {name[7:10]} first")
    plans = {**json.loads(plans_file.read_text()), "continue_training": options.continue_training}
    if configuration not in plans["configurations"]:
        raise ReIsoSegError(f"{plans_file}: no configuration {configuration!r} (it has "
                            f"{', '.join(plans['configurations'])})")
    dataset_json = json.loads((preprocessed / "dataset.json").read_text())
    device = resolve_device(options.device)
    budget = _memory_budget(options, device, TRAINERS[trainer_name])
    estimate = None
    if budget is not None:
        plans, estimate = TRAINERS[trainer_name].fitted_to_memory(
            plans, configuration, budget, PlansManager(plans).get_label_manager(dataset_json).num_segmentation_heads,
            mixed_precision=device.type == "cuda")
    _seed(options.seed)
    trainer = TRAINERS[trainer_name](plans, configuration, int(fold) if str(fold).isdigit() else fold, dataset_json,
                                     device=device)
    _configure(trainer, options)
    if estimate is not None:
        trainer.print_to_log_file(f"training patch {list(trainer.configuration_manager.patch_size)}, batch "
                                  f"{trainer.configuration_manager.batch_size}: about {estimate.gib:.2f} GiB per step "
                                  f"of a {budget / 2**30:.1f} GiB budget")
    store_instance_settings(preprocessed / "dataset.json", Path(trainer.output_folder_base))
    if options.validation_only:  # v2's own -val: the trained fold's validation cases, predicted and scored again
        checkpoint = Path(trainer.output_folder) / CHECKPOINTS[2 if options.valbest else 0]
        _load(trainer, [checkpoint], f"{checkpoint}: not found; train the fold first")
        trainer.perform_actual_validation(options.npz)
        return Path(trainer.output_folder)
    if options.continue_training:
        _continue(trainer)
    trainer.run_training()
    if options.run_validation:
        trainer.perform_actual_validation(options.npz)
    return Path(trainer.output_folder)


def _memory_budget(options: TrainingOptions, device: torch.device, trainer_class: type) -> float | None:
    """Bytes the ReIsoSeg trainers fit a training step to: `gpu_memory_gb`, or on CUDA the GPU's memory."""
    if options.gpu_memory_gb is not None:
        return options.gpu_memory_gb * 2**30
    if device.type == "cuda" and issubclass(trainer_class, ReIsoSegTrainer):
        return float(torch.cuda.get_device_properties(device).total_memory)
    return None


def _configure(trainer, options: TrainingOptions) -> None:
    if options.epochs is not None:
        trainer.num_epochs = options.epochs
    if options.iterations_per_epoch is not None:
        trainer.num_iterations_per_epoch = options.iterations_per_epoch
    if options.validation_iterations() is not None:
        trainer.num_val_iterations_per_epoch = options.validation_iterations()
    if options.initial_lr is not None:
        trainer.initial_lr = options.initial_lr
    if options.ani_weight is not None:
        trainer.ani_weight = options.ani_weight
    if options.time_budget_minutes is not None:
        trainer.time_budget_s = 60.0 * options.time_budget_minutes
    if options.checkpoint_minutes is not None:
        trainer.checkpoint_minutes = options.checkpoint_minutes
    if options.optimizer is not None:
        trainer.optimizer_name = options.optimizer
    trainer.em_augmentation = options.em_augmentation
    trainer.snapshot_every_epochs = options.snapshot_every_epochs


def _continue(trainer) -> None:
    """Load the fold's checkpoint into the trainer, read weights-only, with the optimizer it was trained with."""
    _load(trainer, [Path(trainer.output_folder) / name for name in CHECKPOINTS],
          f"{trainer.output_folder}: no checkpoint to continue from", same_optimizer=True)


def _load(trainer, candidates: list[Path], missing: str, same_optimizer: bool = False) -> None:
    """Load the first of `candidates` that exists into the trainer, read weights-only; `missing` if none does."""
    found = [path for path in candidates if path.is_file()]
    if not found:
        raise ReIsoSegError(missing)
    try:
        with checkpoints_read_safely():
            if same_optimizer:
                saved = safe_load_checkpoint(found[0]).get("optimizer_state") or {}
                used = "adamw" if "betas" in (saved.get("param_groups") or [{}])[0] else "sgd"
                if used != getattr(trainer, "optimizer_name", "sgd"):
                    raise ReIsoSegError(f"{found[0]}: trained with {used}; continue it with --optimizer {used}")
            trainer.load_checkpoint(str(found[0]))
    except UnsafePickleError as error:
        raise ReIsoSegError(f"refusing to load a model file: {error}") from error


def _seed(seed: int | None) -> None:
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
