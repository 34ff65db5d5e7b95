"""Names of nnU-Net v1's files and folders that ReIsoSeg reads or writes, and of those it adds: one home each,
importable without nnU-Net (the package, the benchmarks and the tests use them)."""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_PLANS = "nnUNetPlansv2.1"  # nnU-Net v1's plans identifier (ExperimentPlanner3D_v21)
V2_PLANS = "nnUNetPlans"  # nnU-Net v2's default plans identifier
DEFAULT_CONFIGURATION = "3d_fullres"
DEFAULT_TRAINER = "ReIsoSegTrainer"
FINAL_CHECKPOINT = "model_final_checkpoint"  # checkpoint names, without the .model suffix
LATEST_CHECKPOINT = "model_latest"
BEST_CHECKPOINT = "model_best"
CHECKPOINT_SUFFIX = ".model"  # beside each: NAME.model.pkl (plans, trainer name), read without unrestricted pickle

TRAINER_SETTINGS_FILE = "reisoseg.json"  # beside a fold's checkpoints: what the trainer chose (ani_scale, patch, ...)
BRANCH_LOSSES_FILE = "branch_losses.json"  # beside a fold's checkpoints: L_iso and L_ani of each completed epoch
INSTANCES_FILE = "instances.json"  # beside a model (TRAINER__PLANS): how its classes encode objects
INSTANCES_KEY = "reisoseg_instances"  # the same settings in dataset.json, where training copies them from
INSTANCES_SUBFOLDER = "instances"  # predicted objects inside a prediction folder
IGNORE_LABEL_NAME = "ignore"  # dataset.json label name of unannotated voxels (the highest value, as in nnU-Net v2)
ENGINE_LOG = "engine.log"  # nnU-Net's own messages, in a command's output folder
CASE_SUFFIX = "_0000.nii.gz"  # an nnU-Net case's (only) channel: CASE_0000.nii.gz, on both engines


def model_folder(results: str | os.PathLike, task_name: str, trainer: str = DEFAULT_TRAINER,
                 plans: str = DEFAULT_PLANS, configuration: str = DEFAULT_CONFIGURATION) -> Path:
    """`RESULTS_FOLDER/nnUNet/<configuration>/<TaskXXX_Name>/<trainer>__<plans>`, where nnU-Net v1 trains to."""
    return Path(results) / "nnUNet" / configuration / task_name / f"{trainer}__{plans}"


def fold_folder(model: str | os.PathLike, fold: str | int) -> Path:
    """A fold's folder inside a model folder: `all` or `fold_N`."""
    return Path(model) / ("all" if str(fold) == "all" else f"fold_{fold}")


def checkpoint_file(fold: str | os.PathLike, checkpoint: str = FINAL_CHECKPOINT) -> Path:
    return Path(fold) / f"{checkpoint}{CHECKPOINT_SUFFIX}"


def v2_plans_identifier(asked: str) -> str:
    """v2's default plans where the commands' default (v1's) was left as it is."""
    return V2_PLANS if asked == DEFAULT_PLANS else asked


def v2_model_name(trainer: str, plans: str, configuration: str) -> str:
    """A v2 model folder's name: TRAINER__PLANS__CONFIGURATION."""
    return f"{trainer}__{plans}__{configuration}"


def v2_configuration(model_folder: str | os.PathLike) -> str:
    """The configuration a v2 model folder was trained on, from its name."""
    return Path(model_folder).name.rsplit("__", 1)[-1]


def case_names(folder: str | os.PathLike) -> list[str]:
    """The cases of an nnU-Net image folder (CASE for each CASE_0000.nii.gz), sorted."""
    return sorted(p.name[:-len(CASE_SUFFIX)] for p in Path(folder).glob(f"*{CASE_SUFFIX}"))


def plans_file(preprocessed: str | os.PathLike, task_name: str, plans: str = DEFAULT_PLANS,
               three_d: bool = True) -> Path:
    """`nnUNet_preprocessed/<TaskXXX_Name>/<plans>_plans_3D.pkl` (or `_2D`), written by nnU-Net v1's planning."""
    return Path(preprocessed) / task_name / f"{plans}_plans_{'3D' if three_d else '2D'}.pkl"
