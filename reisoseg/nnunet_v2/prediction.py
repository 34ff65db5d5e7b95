"""Prediction with a model trained on nnU-Net v2, as a library call.

v2's `nnUNetPredictor.initialize_from_trained_model_folder` loads checkpoints with `torch.load(weights_only=False)`
and finds the trainer by v2's package walk. Here the checkpoints are read by reisoseg.safe_loading, `plans.json` and
`dataset.json` as JSON, the network is built by our trainer class, and the predictor is set up with
`manual_initialization`. Cases are predicted one at a time in this process (no spawned workers).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from reisoseg.console import progress_bar
from reisoseg.devices import resolve_device
from reisoseg.errors import ReIsoSegError
from reisoseg.inference.cases import write_objects
from reisoseg.instances.target import InstanceSettings, model_instance_settings
from reisoseg.io.atomic import atomic_file
from reisoseg.io.nifti import read_nifti, write_nifti
from reisoseg.io.validation import check_image
from reisoseg.layout import (
    CASE_SUFFIX,
    IGNORE_LABEL_NAME,
    INSTANCES_SUBFOLDER,
    V2_PLANS,
    case_names,
    v2_configuration,
)
from reisoseg.network.trained import TrainedNetwork
from reisoseg.nnunet_v2.trainers import TRAINERS, ReIsoSegTrainer
from reisoseg.nnunet_v2.training import model_folder
from reisoseg.safe_loading import UnsafePickleError, safe_load_checkpoint


@dataclass
class V2PredictionOptions:
    """What `reisoseg predict --engine v2` takes today."""

    configuration: str = "3d_fullres"
    plans_identifier: str = V2_PLANS
    folds: Sequence[str] | None = None  # None: every trained fold
    checkpoint: str = "checkpoint_final.pth"
    step_size: float = 0.5
    disable_tta: bool = False
    device: str | None = None
    overwrite_existing: bool = False
    save_probabilities: bool = False  # CASE.npz ("probabilities", v2's name) beside each output
    instances: bool = False  # also decode objects (models trained on an instance target)
    decoding: dict[str, float] = field(default_factory=dict)  # overrides of the model's InstanceSettings
    progress: bool = False


def trained_folds(folder: Path, folds: Sequence[str] | None, checkpoint: str) -> list[str]:
    """The folds asked for (default: every fold with the checkpoint), each checked to hold it."""
    folds = list(folds) if folds else sorted(p.name[len("fold_"):] for p in folder.glob("fold_*")
                                             if (p / checkpoint).is_file())
    missing = [str(path) for fold in folds if not (path := folder / f"fold_{fold}" / checkpoint).is_file()]
    if not folds or missing:
        raise ReIsoSegError(f"{missing[0] if missing else folder}: checkpoint not found")
    return folds


def load_predictor(folder: Path, configuration: str, folds: Sequence[str], checkpoint: str, device: torch.device,
                   *, step_size: float = 0.5, mirroring: bool = True) -> nnUNetPredictor:
    """v2's predictor for the model in `folder`, every file read without unrestricted pickle."""
    paths = [folder / f"fold_{fold}" / checkpoint for fold in folds]
    try:
        checkpoints = [safe_load_checkpoint(path) for path in paths]
    except UnsafePickleError as error:
        raise ReIsoSegError(f"refusing to load a model file: {error}") from error
    trainer_name = checkpoints[0]["trainer_name"]
    if trainer_name not in TRAINERS:
        raise ReIsoSegError(f"{paths[0]}: trained with {trainer_name}, which reisoseg does not build on v2 (use one "
                            f"of {', '.join(TRAINERS)})")
    plans_manager = PlansManager(json.loads((folder / "plans.json").read_text()))
    dataset_json = json.loads((folder / "dataset.json").read_text())
    configuration_manager = plans_manager.get_configuration(configuration)
    network = TRAINERS[trainer_name].build_network_architecture(
        plans_manager, configuration_manager,
        determine_num_input_channels(plans_manager, configuration_manager, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
    predictor = nnUNetPredictor(tile_step_size=step_size, use_mirroring=mirroring,
                                perform_everything_on_device=device.type == "cuda", device=device, allow_tqdm=False)
    predictor.manual_initialization(network.to(device), plans_manager, configuration_manager,
                                    [checkpoint["network_weights"] for checkpoint in checkpoints], dataset_json,
                                    trainer_name, checkpoints[0].get("inference_allowed_mirroring_axes"))
    return predictor


def predict_folder(input_folder: str | os.PathLike, output_folder: str | os.PathLike, dataset: str | int,
                   trainer_name: str, options: V2PredictionOptions | None = None) -> Path:
    """Predict every `CASE_0000.nii.gz` of `input_folder` into `output_folder/CASE.nii.gz`, with its spacing; a
    model trained on an instance target writes its semantic classes there and, with `options.instances`, its
    objects to `output_folder/instances/CASE.nii.gz`."""
    options = options or V2PredictionOptions()
    cases = case_names(input_folder)
    if not cases:
        raise ReIsoSegError(f"{input_folder}: no cases named CASE{CASE_SUFFIX}")
    folder = model_folder(options.configuration, trainer_name, dataset, options.plans_identifier)
    if not folder.is_dir():
        raise ReIsoSegError(f"{folder}: no v2 model (train it with `reisoseg train --engine v2`)")
    settings = model_instance_settings(folder)
    if options.instances and settings is None:
        raise ReIsoSegError(f"{folder}: this model was trained without an instance target, so it cannot decode "
                            f"objects; train on a dataset written by `reisoseg synth --instances` or `reisoseg "
                            f"convert --instances`")
    if settings is not None:
        settings = replace(settings, **options.decoding)
    predictor = load_predictor(folder, options.configuration, trained_folds(folder, options.folds, options.checkpoint),
                               options.checkpoint, resolve_device(options.device), step_size=options.step_size,
                               mirroring=not options.disable_tta)
    output = Path(output_folder)
    output.mkdir(parents=True, exist_ok=True)
    with progress_bar(len(cases), "predicting", "case", enabled=options.progress) as bar:
        for case in cases:
            target = output / f"{case}.nii.gz"
            if options.overwrite_existing or not target.exists():
                _predict_case(predictor, Path(input_folder) / f"{case}{CASE_SUFFIX}", target, settings, options)
            bar.update()
    return output


def _predict_case(predictor: nnUNetPredictor, image_file: Path, target: Path, settings: InstanceSettings | None,
                  options: V2PredictionOptions) -> None:
    image, spacing = read_nifti(image_file)
    check_image(str(image_file), image)
    probabilities_needed = options.save_probabilities or options.instances
    with torch.no_grad():
        predicted = predictor.predict_single_npy_array(image[None].astype(np.float32), {"spacing": list(spacing)},
                                                       save_or_return_probabilities=probabilities_needed)
    segmentation, probabilities = predicted if probabilities_needed else (predicted, None)
    segmentation = np.asarray(segmentation).astype(np.uint8)
    if options.save_probabilities:
        with atomic_file(target.with_name(f"{target.name[:-len('.nii.gz')]}.npz")) as temporary:
            np.savez_compressed(temporary, probabilities=probabilities)
    if options.instances:
        write_objects(target.parent / INSTANCES_SUBFOLDER / target.name, probabilities, spacing, settings)
    if settings is not None:
        segmentation = settings.semantic(segmentation)
    with atomic_file(target) as temporary:
        write_nifti(temporary, segmentation, spacing)


def trained_network(folder: Path, fold: str, checkpoint: str) -> TrainedNetwork:
    """The ReIsoSeg network of one fold of a v2 model folder (TRAINER__PLANS__CONFIGURATION), read without
    unrestricted pickle: weights from the checkpoint, spacing, patch and normalisation from plans.json, class names
    from dataset.json, the pattern from the trainer."""
    path = folder / f"fold_{fold}" / checkpoint
    if not path.is_file():
        raise ReIsoSegError(f"{path}: checkpoint not found")
    try:
        saved = safe_load_checkpoint(path)
    except UnsafePickleError as error:
        raise ReIsoSegError(f"refusing to load a model file: {error}") from error
    trainer = TRAINERS.get(saved["trainer_name"])
    if trainer is None or not issubclass(trainer, ReIsoSegTrainer):
        raise ReIsoSegError(f"{path}: trained with {saved['trainer_name']}; only ReIsoSeg trainers' models can be "
                            f"exported (nnU-Net's networks are not ReIsoSegRMV6)")
    configuration = PlansManager(json.loads((folder / "plans.json").read_text())).get_configuration(
        v2_configuration(folder))
    scheme, masked = configuration.normalization_schemes[0], configuration.use_mask_for_norm[0]
    if scheme not in ("ZScoreNormalization", "NoNormalization") or masked:
        raise ReIsoSegError(f"{folder}: its plans normalise with {scheme}{' inside the nonzero mask' if masked else ''}"
                            f", which BioImage.IO's preprocessing cannot express (only z-score over the whole input)")
    dataset = json.loads((folder / "dataset.json").read_text())
    names = {int(value): name for name, value in dataset["labels"].items() if name != IGNORE_LABEL_NAME}
    spacing = tuple(float(s) for s in configuration.spacing)
    return TrainedNetwork(
        ani_scale=tuple(trainer.pattern(spacing)), input_channels=len(dataset["channel_names"]),
        class_names=tuple(names[value] for value in sorted(names)),
        state_dict=saved["network_weights"], spacing=spacing, patch_size=tuple(configuration.patch_size),
        normalisation="none" if scheme == "NoNormalization" else "zscore", trainer=saved["trainer_name"])
