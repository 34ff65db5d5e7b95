"""Folder prediction with a trained nnU-Net v1 model folder, ours or nnU-Net's, loaded without unrestricted pickle."""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from reisoseg.errors import ReIsoSegError
from reisoseg.nnunet_v1.tasks import parse_fold, require_environment, resolve_task


@dataclass
class PredictionOptions:
    """nnUNet_predict's settings (defaults as there, except TTA and threads sized for small machines)."""

    configuration: str = "3d_fullres"
    plans_identifier: str = "nnUNetPlansv2.1"
    folds: Optional[Sequence[str]] = None
    checkpoint: str = "model_final_checkpoint"
    save_npz: bool = False
    disable_tta: bool = False
    step_size: float = 0.5
    overwrite_existing: bool = True
    num_threads_preprocessing: int = 1
    num_threads_nifti_save: int = 1
    disable_postprocessing: bool = False
    fp32: bool = False
    device: Optional[str] = None


def model_folder(task: str, trainer_name: str, options: PredictionOptions) -> Path:
    """`RESULTS_FOLDER/nnUNet/<configuration>/<Task>/<trainer>__<plans>`, checked to exist."""
    require_environment("RESULTS_FOLDER")
    task_name = resolve_task(task)
    folder = (Path(os.environ["RESULTS_FOLDER"]) / "nnUNet" / options.configuration / task_name
              / f"{trainer_name}__{options.plans_identifier}")
    if not folder.is_dir():
        raise ReIsoSegError(f"{folder}: no trained model for trainer {trainer_name} on {task_name}")
    return folder


def _checked_folds(folder: Path, folds: Optional[Sequence[str]], checkpoint: str) -> list:
    if folds is None:
        found = sorted(p.name for p in folder.glob("fold_*") if p.is_dir())
        if not found:
            raise ReIsoSegError(f"{folder}: no fold_* folders")
        folds = [name[len("fold_"):] for name in found]
    parsed = [parse_fold(f) for f in folds]
    for fold in parsed:
        fold_dir = folder / ("all" if fold == "all" else f"fold_{fold}")
        if not fold_dir.is_dir():
            raise ReIsoSegError(f"{fold_dir}: fold {fold} was not trained")
        if not (fold_dir / f"{checkpoint}.model").is_file():
            raise ReIsoSegError(f"{fold_dir / (checkpoint + '.model')}: checkpoint not found")
    return parsed


def predict_folder(input_folder: str | os.PathLike, output_folder: str | os.PathLike, task: str, trainer_name: str,
                   options: Optional[PredictionOptions] = None) -> Path:
    """Predict every case (`<case>_0000.nii.gz`, ...) of a folder with an ensemble of the given folds."""
    options = options or PredictionOptions()
    if not Path(input_folder).is_dir():
        raise ReIsoSegError(f"{input_folder}: input folder does not exist")
    folder = model_folder(task, trainer_name, options)
    folds = _checked_folds(folder, options.folds, options.checkpoint)
    if options.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    from reisoseg.nnunet_v1.compat import install

    install()
    from nnunet.inference.predict import predict_from_folder

    from reisoseg.devices import resolve_device

    mixed_precision = not options.fp32 and resolve_device(options.device).type == "cuda"
    os.makedirs(output_folder, exist_ok=True)
    try:
        predict_from_folder(str(folder), str(input_folder), str(output_folder), folds, options.save_npz,
                            options.num_threads_preprocessing, options.num_threads_nifti_save, None, 0, 1,
                            not options.disable_tta, mixed_precision=mixed_precision,
                            overwrite_existing=options.overwrite_existing, step_size=options.step_size,
                            checkpoint_name=options.checkpoint,
                            disable_postprocessing=options.disable_postprocessing)
    except pickle.UnpicklingError as error:  # our restricted unpickler, or torch's weights_only loader
        message = str(error).strip().splitlines()[0]
        raise ReIsoSegError(f"refusing to load a model file of {folder}: {message}") from None
    return Path(output_folder)
