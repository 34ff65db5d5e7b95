"""The engines `quality.py` compares the two networks on: nnU-Net v1 (the default, as the published method knows it)
and nnU-Net v2. Each says where its folders are, how a task is planned, how a run trains with derived plans, which
checkpoint holds a snapshot, how a model predicts the test set, and where its logs keep the epochs' times and the
online pseudo-Dice.

One process runs one engine: both read `nnUNet_preprocessed`, and v2 reads its folders once, when it is imported.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import workspace

from reisoseg.io.nnunet_task import RAW_VARIABLES, task_folder_name
from reisoseg.layout import (
    DEFAULT_CONFIGURATION,
    FINAL_CHECKPOINT,
    LATEST_CHECKPOINT,
    V2_PLANS,
    checkpoint_file,
    plans_file,
)
from reisoseg.nnunet_v1.training_options import TrainingOptions, fold_output_folder
from reisoseg.safe_loading import safe_load_checkpoint

RESULTS = Path(__file__).resolve().parent / "results"
FIGURES = Path(__file__).resolve().parents[1] / "fig"


class V1:
    """nnU-Net v1: ReIsoSegTrainer against nnUNetTrainerV2EM (nnU-Net's trainer with our durable checkpoints)."""

    key = "v1"
    title = "nnU-Net v1"
    trainers = {"auto": "ReIsoSegTrainer", "nnunet": "nnUNetTrainerV2EM"}
    runs = RESULTS / "quality_runs"
    report = RESULTS / "quality.md"
    summary = RESULTS / "quality.json"
    figure = FIGURES / "quality_dice_vs_iterations.png"
    epoch_started = re.compile(r"^epoch:\s+(\d+)")  # a line of the training log
    epoch_took = re.compile(r"This epoch took ([\d.]+) s")

    def use_folders(self, work: Path) -> None:
        workspace.use_folders(work)

    def use_results(self, folder: Path) -> None:
        """Records, tables and figure go to `folder` instead of the committed ones (a run on another machine)."""
        self.runs, self.report, self.summary, self.figure = (folder / path.name for path in (
            self.runs, self.report, self.summary, self.figure))

    def raw_task_folder(self, task: str) -> Path:
        return Path(self.raw_base()) / "nnUNet_raw_data" / task

    def task_name(self, task_id: int, name: str) -> str:
        return task_folder_name(task_id, name, self.key)

    def raw_base(self) -> str:
        return os.environ[RAW_VARIABLES[self.key]]

    def plan(self, task_id: int, task: str) -> None:
        if not plans_file(os.environ["nnUNet_preprocessed"], task).is_file():
            from reisoseg.nnunet_v1.plans import plan_and_preprocess

            plan_and_preprocess(task_id)

    def planned_spacing(self, task: str) -> list[float]:
        with open(plans_file(os.environ["nnUNet_preprocessed"], task), "rb") as handle:
            plans = pickle.load(handle)  # written by nnU-Net on this machine
        return plans["plans_per_stage"][len(plans["plans_per_stage"]) - 1]["current_spacing"]

    def fold_folder(self, task: str, trainer: str, plans: str) -> Path:
        return fold_output_folder(DEFAULT_CONFIGURATION, trainer, task, "all", plans)

    def is_trained(self, fold: Path) -> bool:
        return checkpoint_file(fold).is_file()

    def can_resume(self, fold: Path) -> bool:
        return checkpoint_file(fold, LATEST_CHECKPOINT).is_file()

    def train(self, task: str, trainer: str, patch: tuple[int, int, int], batch_size: int,
              options: TrainingOptions) -> None:
        """Fold 'all' on plans derived for `patch` and `batch_size`, named `options.plans_identifier`."""
        from reisoseg.nnunet_v1.plans import write_derived_plans
        from reisoseg.nnunet_v1.training import run_training

        write_derived_plans(task, options.plans_identifier, patch_size=patch, batch_size=batch_size)
        run_training(DEFAULT_CONFIGURATION, trainer, task, "all", options)

    def checkpoint(self, epochs: int, final: bool) -> str:
        return FINAL_CHECKPOINT if final else f"model_ep_{epochs:03d}"

    def predict(self, images: Path, predictions: Path, task: str, trainer: str, plans: str, checkpoint: str,
                step_size: float, device: str | None, instances: bool) -> None:
        workspace.predict_model(images, predictions, task, trainer, plans, checkpoint, step_size, device,
                                instances=instances)

    def pseudo_dice(self, fold: Path) -> list[float]:
        """Per-epoch online pseudo-Dice that nnU-Net stores in the final checkpoint."""
        return [float(v) for v in safe_load_checkpoint(checkpoint_file(fold))["plot_stuff"][3]]


class V2(V1):
    """nnU-Net v2: ReIsoSegTrainer (v2) against nnUNetTrainerEM (v2's nnUNetTrainer with our training layer)."""

    key = "v2"
    title = "nnU-Net v2"
    trainers = {"auto": "ReIsoSegTrainer", "nnunet": "nnUNetTrainerEM"}
    runs = RESULTS / "quality_runs_v2"
    report = RESULTS / "quality_v2.md"
    summary = RESULTS / "quality_v2.json"
    figure = FIGURES / "quality_v2_dice_vs_iterations.png"
    epoch_started = re.compile(r": Epoch (\d+)\s*$")
    epoch_took = re.compile(r"Epoch time: ([\d.]+) s")

    def use_folders(self, work: Path) -> None:
        for variable, sub in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                              ("nnUNet_results", "results")):
            folder = work / "nnunet_v2" / sub
            folder.mkdir(parents=True, exist_ok=True)
            os.environ[variable] = str(folder)
        os.environ.setdefault("nnUNet_n_proc_DA", str(os.cpu_count() or 1))

    def raw_task_folder(self, task: str) -> Path:
        return Path(self.raw_base()) / task

    def _preprocessed(self, task: str) -> Path:
        return Path(os.environ["nnUNet_preprocessed"]) / task

    def plan(self, task_id: int, task: str) -> None:
        """v2's own planning and preprocessing of 3d_fullres, as users run it."""
        if (self._preprocessed(task) / f"{V2_PLANS}.json").is_file():
            return
        command = [str(Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"), "-d", str(task_id), "-c",
                   DEFAULT_CONFIGURATION, "-np", "1", "-npfp", "1"]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)

    def planned_spacing(self, task: str) -> list[float]:
        plans = json.loads((self._preprocessed(task) / f"{V2_PLANS}.json").read_text())
        return plans["configurations"][DEFAULT_CONFIGURATION]["spacing"]

    def fold_folder(self, task: str, trainer: str, plans: str) -> Path:
        from reisoseg.nnunet_v2.training import fold_output_folder as v2_fold_output_folder

        return v2_fold_output_folder(DEFAULT_CONFIGURATION, trainer, task, "all", plans)

    def is_trained(self, fold: Path) -> bool:
        return (fold / "checkpoint_final.pth").is_file()

    def can_resume(self, fold: Path) -> bool:
        return (fold / "checkpoint_latest.pth").is_file()

    def train(self, task: str, trainer: str, patch: tuple[int, int, int], batch_size: int,
              options: TrainingOptions) -> None:
        from reisoseg.nnunet_v2.plans import write_derived_plans
        from reisoseg.nnunet_v2.training import run_training

        write_derived_plans(self._preprocessed(task), V2_PLANS, options.plans_identifier, DEFAULT_CONFIGURATION,
                            patch_size=patch, batch_size=batch_size)
        run_training(DEFAULT_CONFIGURATION, trainer, task, "all", options)

    def checkpoint(self, epochs: int, final: bool) -> str:
        from reisoseg.nnunet_v2.em_training import snapshot_checkpoint

        return "checkpoint_final.pth" if final else snapshot_checkpoint(epochs)

    def predict(self, images: Path, predictions: Path, task: str, trainer: str, plans: str, checkpoint: str,
                step_size: float, device: str | None, instances: bool) -> None:
        from reisoseg.nnunet_v2.prediction import V2PredictionOptions, predict_folder

        predict_folder(images, predictions, task, trainer,
                       V2PredictionOptions(plans_identifier=plans, folds=["all"], checkpoint=checkpoint,
                                           step_size=step_size, disable_tta=True, device=device,
                                           overwrite_existing=True, instances=instances))

    def pseudo_dice(self, fold: Path) -> list[float]:
        """Per-epoch mean foreground pseudo-Dice from v2's logger, kept in the final checkpoint."""
        return [float(v) for v in safe_load_checkpoint(fold / "checkpoint_final.pth")["logging"]["mean_fg_dice"]]


ENGINES = {engine.key: engine for engine in (V1(), V2())}

