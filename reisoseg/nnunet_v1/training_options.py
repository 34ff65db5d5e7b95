"""What a training run is asked to do, and where it trains: nnU-Net-free, so that a command can check its arguments
and name its log file before anything imports nnU-Net (which prints and creates its folders when imported)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from reisoseg.errors import ReIsoSegError
from reisoseg.layout import DEFAULT_PLANS, fold_folder, model_folder
from reisoseg.nnunet_v1.tasks import parse_fold, require_environment, resolve_task
from reisoseg.optimizers import OPTIMIZERS

CONFIGURATIONS = ("2d", "3d_lowres", "3d_fullres", "3d_cascade_fullres")


@dataclass
class TrainingOptions:
    """What nnU-Net v1's `nnUNet_train` takes, plus the ReIsoSeg settings. None keeps the trainer's default."""

    validation_only: bool = False
    continue_training: bool = False
    npz: bool = False
    plans_identifier: str = DEFAULT_PLANS
    fp32: bool = False
    valbest: bool = False
    deterministic: bool = False
    seed: int | None = None
    device: str | None = None
    epochs: int | None = None
    iterations_per_epoch: int | None = None
    val_iterations_per_epoch: int | None = None
    ani_weight: float | None = None
    time_budget_minutes: float | None = None
    run_validation: bool = True
    validation_folder: str = "validation_raw"
    disable_postprocessing_on_folds: bool = False
    snapshot_every_epochs: int | None = None  # also keep model_ep_NNN.model every N epochs (nnU-Net's own files)
    progress: bool = False  # a bar per epoch on standard error
    patch_size: tuple[int, int, int] | None = None  # train on plans derived for this patch (None: the plans')
    batch_size: int | None = None  # ... and/or this batch size
    gpu_memory_gb: float | None = None  # our trainers: fit the patch to this budget (default on CUDA: the GPU's)
    checkpoint_minutes: float | None = None  # model_latest at an epoch's end once this long since the last (0: every)
    em_augmentation: bool = False  # our trainers: add the EM section-defect augmentation (reisoseg.augmentation)
    optimizer: str | None = None  # our trainers: "sgd" (nnU-Net's, the default) or "adamw"
    initial_lr: float | None = None  # where the poly learning-rate schedule starts (nnU-Net: 0.01)
    cpu_bf16: bool = False  # our trainers on the CPU: bfloat16 autocast (faster where the CPU has bf16 instructions)

    def __post_init__(self) -> None:
        """Values no engine can use are refused here, before any work."""
        positive = {"initial_lr": self.initial_lr, "time_budget_minutes": self.time_budget_minutes,
                    "gpu_memory_gb": self.gpu_memory_gb}
        for name, value in positive.items():
            if value is not None and not value > 0:
                raise ReIsoSegError(f"`{name}` must be positive, got {value}")
        if self.checkpoint_minutes is not None and self.checkpoint_minutes < 0:
            raise ReIsoSegError(f"`checkpoint_minutes` must be >= 0, got {self.checkpoint_minutes}")
        if self.ani_weight is not None and not 0.0 <= self.ani_weight <= 1.0:
            raise ReIsoSegError(f"`ani_weight` must lie in [0, 1], got {self.ani_weight}")
        if self.optimizer is not None and self.optimizer not in OPTIMIZERS:
            raise ReIsoSegError(f"unknown `optimizer` {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")

    def validation_iterations(self) -> int | None:
        """Validation iterations per epoch: as asked, else a fifth of the training iterations, else None (the
        engine's default)."""
        if self.val_iterations_per_epoch is not None:
            return self.val_iterations_per_epoch
        return None if self.iterations_per_epoch is None else max(1, self.iterations_per_epoch // 5)


def effective_plans_identifier(options: TrainingOptions) -> str:
    """The plans a run trains with: `plans_identifier`, or plans derived from it for `patch_size`/`batch_size`
    (their own identifier, hence their own model folder)."""
    parts = [options.plans_identifier]
    if options.patch_size is not None:
        parts.append("patch" + "x".join(str(int(s)) for s in options.patch_size))
    if options.batch_size is not None:
        parts.append(f"batch{int(options.batch_size)}")
    return "_".join(parts)



def fold_output_folder(configuration: str, trainer_name: str, task: str, fold: str | int,
                       plans_identifier: str = DEFAULT_PLANS) -> Path:
    """Where nnU-Net v1 trains this fold (RESULTS_FOLDER/nnUNet/CONFIGURATION/TASK/TRAINER__PLANS/fold_N)."""
    require_environment("RESULTS_FOLDER")
    return fold_folder(model_folder(os.environ["RESULTS_FOLDER"], resolve_task(task), trainer_name, plans_identifier,
                                    configuration), parse_fold(fold))
