"""The main job on the embedded default: synthesise, plan, train, predict, evaluate and draw, in one folder.

Every step writes its result before the next starts, and a rerun skips the finished ones (unless `fresh`).
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from reisoseg.devices import resolve_device
from reisoseg.errors import ReIsoSegError
from reisoseg.inference.calibration import calibrate_model
from reisoseg.instances.calibration import store_calibration, uncalibrated_settings
from reisoseg.io.atomic import atomic_file
from reisoseg.layout import (
    BRANCH_LOSSES_FILE,
    DEFAULT_CONFIGURATION,
    DEFAULT_TRAINER,
    ENGINE_LOG,
    INSTANCES_FILE,
    INSTANCES_SUBFOLDER,
    TRAINER_SETTINGS_FILE,
    checkpoint_file,
    fold_folder,
    model_folder,
    plans_file,
)
from reisoseg.nnunet_v1.training_options import TrainingOptions
from reisoseg.synthetic.generator import CLASSES as CLASSES_BY_NAME
from reisoseg.synthetic.generator import generate_volume
from reisoseg.synthetic.task import volume_seed

TASK_ID = 500
TASK_NAME = f"Task{TASK_ID}_SynthDemo"
DEMO_PLANS = "nnUNetPlans_reisoseg_demo"
TRAINER = DEFAULT_TRAINER
CLASSES = {1: "mitochondria"}
FOLD = "all"  # the demo trains on every training volume: it has its own validation volumes for calibration
VALIDATION_INDEX = 100  # volume index of the first validation volume (the task's volumes are numbered from 0)


@dataclass
class DemoSettings:
    """Sizes and budget of the demo; the defaults fit a 2-core laptop CPU in under 10 minutes."""

    num_training: int = 6
    num_test: int = 2
    num_validation: int = 2  # generated only to calibrate the object decoding, never the test volumes
    shape: tuple[int, int, int] = (32, 160, 160)
    ratio: int = 8
    seed: int = 0
    patch_size: tuple[int, int, int] = (16, 64, 64)
    batch_size: int = 2
    budget_minutes: float = 6.5
    iterations_per_epoch: int = 10
    val_iterations_per_epoch: int = 1
    step_size: float = 0.5
    # AdamW, not nnU-Net's SGD: in the demo's 70 iterations it learns more of the objects' boundaries
    # (documentation/instances.md, "Measured on the demo")
    optimizer: str = "adamw"
    initial_lr: float = 3e-3
    # bf16 autocast on the CPU fits half as many epochs again into the budget and raises Dice, but its objects scored
    # lower (documentation/instances.md, "Tried and dropped"): off, since the demo is about objects
    cpu_bf16: bool = False
    device: str | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @classmethod
    def quick(cls) -> DemoSettings:
        """A few-second variant for tests: tiny volumes, a few iterations."""
        return cls(num_training=5, num_test=1, num_validation=1, shape=(16, 64, 64), patch_size=(16, 64, 64),
                   budget_minutes=0.05, iterations_per_epoch=2)


SETTINGS_FILE = "settings.json"  # what the output folder was made with


def _check_settings(output: Path, settings: DemoSettings) -> None:
    """Record the settings of a new output folder; refuse one made with other settings (its steps would be reused
    with results that do not belong to them)."""
    wanted = {k: v for k, v in asdict(settings).items() if k not in ("timings", "device")}
    wanted = json.loads(json.dumps(wanted))  # tuples as lists, as they are read back
    path = output / SETTINGS_FILE
    if path.is_file():
        recorded = json.loads(path.read_text())
        differing = [f"{k} {recorded.get(k)} -> {v}" for k, v in wanted.items() if recorded.get(k) != v]
        if differing:
            raise ReIsoSegError(f"{output} was made with other settings ({', '.join(differing)}): pass --fresh to "
                                f"redo it, or another --output")
        return
    output.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as temporary:
        temporary.write_text(json.dumps(wanted, indent=1))


def _step(number: int, total: int, title: str, done: bool) -> None:
    print(f"[{number}/{total}] {title}{' (reused)' if done else ''}", flush=True)


def _nnunet_folders(output: Path) -> dict[str, Path]:
    base = output / "nnunet"
    return {"nnUNet_raw_data_base": base / "raw", "nnUNet_preprocessed": base / "preprocessed",
            "RESULTS_FOLDER": base / "results"}


def demo_model_folder(output: str | os.PathLike = "reisoseg_demo") -> Path:
    """Where `reisoseg demo` trains its model (benchmarks reuse it)."""
    return model_folder(_nnunet_folders(Path(output))["RESULTS_FOLDER"], TASK_NAME, TRAINER, DEMO_PLANS)


def validation_seeds(settings: DemoSettings) -> list[int]:
    """Generator seeds of the volumes the demo calibrates its decoding on: outside its task's training and test."""
    return [volume_seed(settings.seed, VALIDATION_INDEX + index) for index in range(settings.num_validation)]


def _calibrate(model: Path, settings: DemoSettings) -> None:
    from reisoseg.nnunet_v1.block_predictor import NnunetV1Model  # imports nnU-Net, whose banner engine.log takes

    pairs = []
    for seed in validation_seeds(settings):
        volume = generate_volume(settings.shape, settings.ratio, seed=seed)
        pairs.append((f"validation_{seed}", volume.image, volume.spacing,
                      np.where(volume.labels == CLASSES_BY_NAME["mitochondria"], volume.instances, 0)))
    calibration = calibrate_model(NnunetV1Model.from_folder(model, [FOLD]), pairs, uncalibrated_settings(model),
                                  step_size=settings.step_size, device=settings.device)
    store_calibration(model, calibration)


def _timed(settings: DemoSettings, key: str, work: Callable[[], object]) -> None:
    start = time.perf_counter()
    work()
    settings.timings[key] = round(time.perf_counter() - start, 1)


def run_demo(output: str | os.PathLike = "reisoseg_demo", settings: DemoSettings | None = None, *,
             fresh: bool = False, verbose: bool = False) -> dict:
    """Run the demo into `output` and return the summary (also written to summary.json). nnU-Net's messages go to
    `output/engine.log` unless `verbose`."""
    from reisoseg.console import engine_output

    settings = settings or DemoSettings()
    output = Path(output).resolve()
    if fresh and output.exists():
        shutil.rmtree(output)
    _check_settings(output, settings)
    folders = _nnunet_folders(output)
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder)  # nnU-Net follows them in every compat.redirected() block
    raw = folders["nnUNet_raw_data_base"] / "nnUNet_raw_data" / TASK_NAME
    plans = plans_file(folders["nnUNet_preprocessed"], TASK_NAME)
    model = demo_model_folder(output)
    predictions = output / "predictions"
    total = 7
    started = time.perf_counter()

    done = (raw / "dataset.json").is_file()
    _step(1, total, f"generating {settings.num_training}+{settings.num_test} synthetic volumes "
                    f"{list(settings.shape)} at z ratio {settings.ratio}", done)
    if not done:
        from reisoseg.synthetic import make_synthetic_task

        _timed(settings, "generate_s", lambda: make_synthetic_task(
            folders["nnUNet_raw_data_base"], TASK_ID, "SynthDemo", num_training=settings.num_training,
            num_test=settings.num_test, shape=settings.shape, ratio=settings.ratio, seed=settings.seed,
            overwrite=True, instances=True))

    done = plans.is_file()
    _step(2, total, "planning and preprocessing with nnU-Net v1", done)
    with engine_output(output / ENGINE_LOG, verbose=verbose):  # importing nnU-Net prints a banner
        from reisoseg.nnunet_v1.plans import plan_and_preprocess, write_derived_plans

        if not done:
            _timed(settings, "plan_s", lambda: plan_and_preprocess(TASK_ID))
        write_derived_plans(TASK_NAME, DEMO_PLANS, patch_size=settings.patch_size, batch_size=settings.batch_size)

    done = checkpoint_file(fold_folder(model, FOLD)).is_file()
    cpu_bf16 = settings.cpu_bf16 and resolve_device(settings.device).type == "cpu"
    _step(3, total, f"training {TRAINER} for {settings.budget_minutes:g} min (patch {list(settings.patch_size)}, "
                    f"batch {settings.batch_size}, {settings.optimizer} from {settings.initial_lr:g}"
                    f"{', bf16 on the CPU' if cpu_bf16 else ''})", done)
    if not done:
        options = TrainingOptions(plans_identifier=DEMO_PLANS, time_budget_minutes=settings.budget_minutes,
                                  iterations_per_epoch=settings.iterations_per_epoch,
                                  val_iterations_per_epoch=settings.val_iterations_per_epoch, run_validation=False,
                                  device=settings.device, epochs=1000, progress=True, optimizer=settings.optimizer,
                                  initial_lr=settings.initial_lr, cpu_bf16=cpu_bf16)
        if verbose:
            os.environ.setdefault("nnunet_use_progress_bar", "1")  # nnU-Net's bar per epoch's iterations
        with engine_output(output / ENGINE_LOG, verbose=verbose):
            from reisoseg.nnunet_v1.training import run_training  # imports nnU-Net, whose banner goes to the log

            _timed(settings, "train_s", lambda: run_training(DEFAULT_CONFIGURATION, TRAINER, TASK_NAME, FOLD, options))

    record_file = model / INSTANCES_FILE
    done = "calibration" in json.loads(record_file.read_text())
    _step(4, total, f"calibrating the object decoding on {settings.num_validation} validation volumes generated "
                    f"for it", done)
    if not done:
        with engine_output(output / ENGINE_LOG, verbose=verbose):
            _timed(settings, "calibrate_s", lambda: _calibrate(model, settings))

    cases = sorted(p.name[:-len("_0000.nii.gz")] for p in (raw / "imagesTs").glob("*_0000.nii.gz"))
    instances = predictions / INSTANCES_SUBFOLDER
    done = all((predictions / f"{case}.nii.gz").is_file() and (instances / f"{case}.nii.gz").is_file()
               for case in cases)
    _step(5, total, f"predicting {len(cases)} held-out volumes (sliding window, step {settings.step_size}) and "
                    f"decoding their mitochondria as objects", done)
    if not done:
        from reisoseg.nnunet_v1.prediction import PredictionOptions, predict_folder

        options = PredictionOptions(plans_identifier=DEMO_PLANS, folds=[FOLD], disable_tta=True,
                                    step_size=settings.step_size, device=settings.device, overwrite_existing=True,
                                    instances=True)
        with engine_output(output / ENGINE_LOG, verbose=verbose):
            _timed(settings, "predict_s", lambda: predict_folder(raw / "imagesTs", predictions, TASK_NAME, TRAINER,
                                                                 options))

    _step(6, total, "evaluating Dice, IoU, HD95 and objects (F1@0.5, AP-50/75, VOI, ARI)", False)
    from reisoseg.evaluation.report import evaluate

    metrics = evaluate(raw / "labelsTs", predictions, classes=CLASSES, instance_classes=tuple(CLASSES),
                       reference_instances=raw / "instancesTs", prediction_instances=instances)
    connected = evaluate(raw / "labelsTs", predictions, classes=CLASSES, instance_classes=tuple(CLASSES),
                         reference_instances=raw / "instancesTs")

    _step(7, total, "writing figures and summary.json", False)
    from reisoseg.figures import plot_overlays, plot_training_curve

    figures = {"training_curve": str(plot_training_curve(fold_folder(model, FOLD), output / "training_curve.png"))}
    figures.update(plot_overlays(raw, predictions, cases[0], output, instances=instances))
    # the budget is in minutes: how far training got depends on the machine, and the results with it
    epochs = len(json.loads((fold_folder(model, FOLD) / BRANCH_LOSSES_FILE).read_text()))
    summary = {
        "task": TASK_NAME,
        "trainer": TRAINER,
        "epochs_trained": epochs,
        "iterations_trained": epochs * settings.iterations_per_epoch,
        "ani_scale": json.loads((fold_folder(model, FOLD) / TRAINER_SETTINGS_FILE).read_text())["ani_scale"],
        "metrics": metrics,
        "metrics_connected_components": connected,
        "decoding_calibration": json.loads(record_file.read_text())["calibration"],
        "settings": {k: v for k, v in asdict(settings).items() if k != "timings"},
        "timings_s": {**settings.timings, "this_run_total_s": round(time.perf_counter() - started, 1)},
        "figures": figures,
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    mean, before = metrics["mean"]["mitochondria"], connected["mean"]["mitochondria"]
    print(f"after {epochs} epochs of {settings.iterations_per_epoch} iterations in {settings.budget_minutes:g} min: "
          f"mitochondria Dice {mean['dice']:.3f}  IoU {mean['iou']:.3f}; objects {mean['predicted_instances']:.0f} "
          f"found / {mean['reference_instances']:.0f} true per volume: F1@0.5 {mean['f1_50']:.2f}  AP-75 "
          f"{mean['ap_75']:.2f} (connected components: {before['predicted_instances']:.0f} objects, F1@0.5 "
          f"{before['f1_50']:.2f})  -> {output / 'summary.json'}")
    return summary
