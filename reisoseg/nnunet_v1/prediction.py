"""Folder prediction with a trained nnU-Net v1 model folder, ours or nnU-Net's, loaded without unrestricted pickle."""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from reisoseg.console import files_progress
from reisoseg.errors import ReIsoSegError
from reisoseg.layout import (
    DEFAULT_CONFIGURATION,
    DEFAULT_PLANS,
    FINAL_CHECKPOINT,
    INSTANCES_SUBFOLDER,
    case_names,
    checkpoint_file,
    fold_folder,
)
from reisoseg.layout import model_folder as model_folder_path
from reisoseg.nnunet_v1.compat import redirected
from reisoseg.nnunet_v1.tasks import parse_fold, require_environment, resolve_task


@dataclass
class PredictionOptions:
    """nnUNet_predict's settings (defaults as there, except TTA and threads sized for small machines)."""

    configuration: str = DEFAULT_CONFIGURATION
    plans_identifier: str = DEFAULT_PLANS
    folds: Sequence[str] | None = None
    checkpoint: str = FINAL_CHECKPOINT
    save_npz: bool = False
    disable_tta: bool = False
    step_size: float = 0.5
    overwrite_existing: bool = True
    num_threads_preprocessing: int = 1
    num_threads_nifti_save: int = 1
    disable_postprocessing: bool = False
    fp32: bool = False
    device: str | None = None
    instances: bool = False  # also decode objects (models trained on an instance target)
    decoding: dict[str, float] = field(default_factory=dict)  # overrides of the model's InstanceSettings
    progress: bool = False  # a bar per case on standard error


def model_folder(task: str, trainer_name: str, options: PredictionOptions) -> Path:
    """`RESULTS_FOLDER/nnUNet/<configuration>/<Task>/<trainer>__<plans>`, checked to exist."""
    require_environment("RESULTS_FOLDER")
    task_name = resolve_task(task)
    folder = model_folder_path(os.environ["RESULTS_FOLDER"], task_name, trainer_name, options.plans_identifier,
                               options.configuration)
    if not folder.is_dir():
        raise ReIsoSegError(f"{folder}: no trained model for trainer {trainer_name} on {task_name}")
    return folder


def checked_folds(folder: Path, folds: Sequence[str] | None, checkpoint: str) -> list:
    """The folds asked for, each checked to hold `checkpoint`; by default every fold_* that holds it, else `all`
    (a model trained on every case, as the demo's) where that holds it."""
    if folds is None:
        found = sorted(p.name[len("fold_"):] for p in folder.glob("fold_*")
                       if checkpoint_file(p, checkpoint).is_file())
        folds = found or (["all"] if checkpoint_file(fold_folder(folder, "all"), checkpoint).is_file() else [])
        if not folds:
            raise ReIsoSegError(f"{folder}: no fold_* or all folder holds a {checkpoint} checkpoint")
    parsed = [parse_fold(f) for f in folds]
    for fold in parsed:
        fold_dir = fold_folder(folder, fold)
        if not fold_dir.is_dir():
            raise ReIsoSegError(f"{fold_dir}: fold {fold} was not trained")
        if not checkpoint_file(fold_dir, checkpoint).is_file():
            raise ReIsoSegError(f"{checkpoint_file(fold_dir, checkpoint)}: checkpoint not found")
    return parsed


def predict_folder(input_folder: str | os.PathLike, output_folder: str | os.PathLike, task: str, trainer_name: str,
                   options: PredictionOptions | None = None) -> Path:
    """Predict every case (`<case>_0000.nii.gz`, ...) of a folder with an ensemble of the given folds."""
    options = options or PredictionOptions()
    if not Path(input_folder).is_dir():
        raise ReIsoSegError(f"{input_folder}: input folder does not exist")
    from reisoseg.instances.target import model_instance_settings

    folder = model_folder(task, trainer_name, options)
    folds = checked_folds(folder, options.folds, options.checkpoint)
    instance_settings = model_instance_settings(folder)
    if instance_settings is not None:
        instance_settings = replace(instance_settings, **options.decoding)
    if options.instances and instance_settings is None:
        raise ReIsoSegError(f"{folder}: this model was trained without an instance target, so it cannot decode "
                            f"objects; train on a task written by `reisoseg synth --instances` or `reisoseg "
                            f"convert --instances`")
    from reisoseg.devices import resolve_device

    device = resolve_device(options.device)  # once per call, before nnU-Net starts (it hides GPUs for cpu)
    mixed_precision = not options.fp32 and device.type == "cuda"
    os.makedirs(output_folder, exist_ok=True)
    cases = case_names(input_folder)
    # without a postprocessing.json (no cross-validation was consolidated) there is nothing to apply or warn about
    no_postprocessing = options.disable_postprocessing or not (folder / "postprocessing.json").is_file()
    try:
        with redirected(), files_progress([Path(output_folder) / f"{case}.nii.gz" for case in cases], "predicting",
                                          "case", enabled=options.progress):
            from nnunet.inference.predict import predict_from_folder

            from reisoseg.nnunet_v1 import trainers  # noqa: F401  (registers ours for nnU-Net's lookup by name)

            predict_from_folder(str(folder), str(input_folder), str(output_folder), folds,
                                options.save_npz or options.instances,
                                options.num_threads_preprocessing, options.num_threads_nifti_save, None, 0, 1,
                                not options.disable_tta, mixed_precision=mixed_precision,
                                overwrite_existing=options.overwrite_existing, step_size=options.step_size,
                                checkpoint_name=options.checkpoint, disable_postprocessing=no_postprocessing)
    except pickle.UnpicklingError as error:  # our restricted unpickler, or torch's weights_only loader
        message = str(error).strip().splitlines()[0]
        raise ReIsoSegError(f"refusing to load a model file of {folder}: {message}") from error
    if instance_settings is not None:
        _finish_instance_outputs(Path(input_folder), Path(output_folder), instance_settings, options)
    return Path(output_folder)



def _case_probabilities(npz: Path, shape: tuple[int, ...]) -> np.ndarray:
    """nnU-Net's exported softmax (cropped to the nonzero box) placed in the whole volume (background outside)."""
    from reisoseg.safe_loading import safe_load_pickle

    cropped = np.load(npz)["softmax"]
    box = safe_load_pickle(npz.with_suffix(".pkl"))["crop_bbox"]
    probabilities = np.zeros((cropped.shape[0], *shape), np.float16)
    probabilities[0] = 1
    probabilities[(slice(None), *(slice(lo, hi) for lo, hi in box))] = cropped
    return probabilities


def _finish_instance_outputs(input_folder: Path, output_folder: Path, settings, options: PredictionOptions) -> None:
    """Fold boundary voxels back into the object class of each semantic output; with `options.instances`, decode
    the objects into OUTPUT/instances/CASE.nii.gz (uint32) with their scores beside them."""
    from reisoseg.inference.cases import write_objects
    from reisoseg.io.atomic import atomic_file
    from reisoseg.io.nifti import read_nifti, write_nifti

    for case in case_names(input_folder):
        output = output_folder / f"{case}.nii.gz"
        labels, spacing = read_nifti(output)
        if options.instances:
            npz = output_folder / f"{case}.npz"
            write_objects(output_folder / INSTANCES_SUBFOLDER / f"{case}.nii.gz",
                          _case_probabilities(npz, labels.shape), spacing, settings)
            if not options.save_npz:
                npz.unlink()
                npz.with_suffix(".pkl").unlink()
        if (labels == settings.boundary_class).any():
            with atomic_file(output) as temporary:
                write_nifti(temporary, settings.semantic(labels), spacing)
