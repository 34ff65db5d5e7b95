"""Shared by the benchmarks: nnU-Net v1 folders under one work folder, a planned synthetic task, a quick model, a
large tiled volume.

Benchmarks import this as `workspace` (they run as scripts from the benchmarks folder). nnU-Net reads its folders
from the environment when it is imported, so `use_folders` must run before anything imports nnunet.
"""
from __future__ import annotations

import math
import os
import platform
import subprocess
import threading
from pathlib import Path
from typing import Callable, Sequence

from reisoseg.layout import plans_file

TILED_SECTIONS = 96  # sections of the large volumes that blockwise inference is measured on


def use_folders(work: Path) -> dict[str, Path]:
    """Point nnU-Net v1 at `work/nnunet/{raw,preprocessed,results}` (created)."""
    folders = {"nnUNet_raw_data_base": work / "nnunet" / "raw", "nnUNet_preprocessed": work / "nnunet" / "preprocessed",
               "RESULTS_FOLDER": work / "nnunet" / "results"}
    for name, folder in folders.items():
        folder.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(folder)
    os.environ.setdefault("nnUNet_n_proc_DA", str(os.cpu_count() or 1))
    return folders


def synthetic_task(task_id: int, name: str, *, ratio: int, shape: Sequence[int], num_training: int,
                   num_test: int, seed: int = 0) -> str:
    """Generate (once) and plan (once) a synthetic task; returns its `TaskXXX_Name`."""
    from reisoseg.nnunet_v1.plans import plan_and_preprocess
    from reisoseg.synthetic import make_synthetic_task

    task_name = f"Task{task_id:03d}_{name}"
    raw = Path(os.environ["nnUNet_raw_data_base"]) / "nnUNet_raw_data" / task_name
    if not (raw / "dataset.json").is_file():
        make_synthetic_task(os.environ["nnUNet_raw_data_base"], task_id, name, num_training=num_training,
                            num_test=num_test, shape=tuple(shape), ratio=ratio, seed=seed, overwrite=True)
    plans = plans_file(os.environ["nnUNet_preprocessed"], task_name)
    if not plans.is_file():
        plan_and_preprocess(task_id)
    return task_name


def predict_model(images: Path, predictions: Path, task: str, trainer: str, plans: str, checkpoint: str,
                  step_size: float, device: str | None, *, instances: bool = False) -> None:
    """Predict `images` with fold 'all' of a v1 model: sliding window, no TTA (`instances`: also decode objects)."""
    from reisoseg.nnunet_v1.prediction import PredictionOptions, predict_folder

    predict_folder(images, predictions, task, trainer,
                   PredictionOptions(plans_identifier=plans, folds=["all"], disable_tta=True, step_size=step_size,
                                     device=device, overwrite_existing=True, checkpoint=checkpoint,
                                     instances=instances))


def score_model(images: Path, labels: Path, task: str, trainer: str, plans: str, checkpoint: str, predictions: Path,
                step_size: float, device: str | None, *, instances: bool = False,
                reference_instances: Path | None = None) -> dict:
    """`predict_model`, then `timed_scores`."""
    return timed_scores(lambda: predict_model(images, predictions, task, trainer, plans, checkpoint, step_size, device,
                                              instances=instances), labels, predictions, reference_instances, instances)


def timed_scores(predict: Callable[[], object], labels: Path, predictions: Path,
                 reference_instances: Path | None = None, instances: bool = False) -> dict:
    """Run `predict` (it writes `predictions`) and score them with `score_predictions`, adding the prediction
    time; `instances`: the predicted objects are in `predictions`' instances subfolder."""
    import time

    from reisoseg.layout import INSTANCES_SUBFOLDER

    start = time.perf_counter()
    predict()
    predict_s = time.perf_counter() - start
    return {"predict_s": predict_s, **score_predictions(labels, predictions, reference_instances,
                                                        predictions / INSTANCES_SUBFOLDER if instances else None)}


def score_predictions(labels: Path, predictions: Path, reference_instances: Path | None = None,
                      prediction_instances: Path | None = None) -> dict:
    """Mitochondria (class 1) against `labels` with `reisoseg.evaluation`: mean and per-case metrics. Objects are
    the given instance folders, else 3D connected components of the labels."""
    from reisoseg.evaluation.report import evaluate

    metrics = evaluate(labels, predictions, classes={1: "mitochondria"}, instance_classes=(1,),
                       reference_instances=reference_instances, prediction_instances=prediction_instances)
    return {"metrics": metrics["mean"]["mitochondria"],
            "per_case": {case: values["mitochondria"] for case, values in metrics["per_case"].items()}}


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} CPU cores ({cpu}), {gpu}, torch {torch.__version__}"


class PeakMemory:
    """Peak resident memory of this process and its children, sampled every `interval` seconds, in GiB.

    Not `getrusage`: on Linux a child's `ru_maxrss` keeps the peak of the parent image it was forked from.
    """

    def __init__(self, interval: float = 0.05):
        self.interval, self.peak_gib = interval, 0.0
        self._stop = threading.Event()

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for process in [me, *me.children(recursive=True)]:
                try:
                    total += process.memory_info().rss
                except psutil.Error:
                    pass
            self.peak_gib = max(self.peak_gib, total / 1024 ** 3)
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def git_revision() -> str:
    result = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parent)
    return result.stdout.strip() or "unknown"


def tiled_volume_shape(gigavoxels: float) -> tuple[int, int, int]:
    """TILED_SECTIONS x n x n with n a multiple of the 64-voxel window, so that windows tile it with step 64."""
    side = max(64, round(math.sqrt(gigavoxels * 1e9 / TILED_SECTIONS) / 64) * 64)
    return TILED_SECTIONS, side, side


def write_tiled_volume(path: Path, shape: tuple[int, int, int]) -> None:
    """A zarr volume tiled from one synthetic volume (mirrored tiles, so there are no seams); kept if it exists."""
    import zarr

    from reisoseg.synthetic import generate_volume

    if path.exists():
        return
    tile = generate_volume((shape[0], 256, 256), 8, seed=7).image
    temporary = path.with_name(path.name + ".tmp")
    array = zarr.open_array(str(temporary), mode="w", shape=shape, chunks=(16, 256, 256), dtype="uint8",
                            zarr_format=2)
    array.attrs["spacing_nm"] = [40.0, 5.0, 5.0]
    for y in range(0, shape[1], 256):
        for x in range(0, shape[2], 256):
            flipped = tile[:, :: (-1) ** (y // 256), :: (-1) ** (x // 256)]
            array[:, y:y + 256, x:x + 256] = flipped[:, : shape[1] - y, : shape[2] - x]
    os.replace(temporary, path)
