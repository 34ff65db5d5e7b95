"""Prediction with a model trained on nnU-Net v2, as a library call.

v2's `nnUNetPredictor.initialize_from_trained_model_folder` loads checkpoints with `torch.load(weights_only=False)`
and finds the trainer by v2's package walk. Here the checkpoints are read by reisoseg.safe_loading, `plans.json` and
`dataset.json` as JSON, the network is built by our trainer class, and the predictor is set up with
`manual_initialization`. Cases are predicted one at a time in this process (no spawned workers).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
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
from reisoseg.io.nifti import read_nifti, write_nifti
from reisoseg.io.validation import check_image
from reisoseg.nnunet_v2.trainers import TRAINERS
from reisoseg.nnunet_v2.training import V2_PLANS, model_folder
from reisoseg.safe_loading import UnsafePickleError, safe_load_checkpoint

CASE_SUFFIX = "_0000.nii.gz"


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
    progress: bool = False


def load_predictor(folder: Path, options: V2PredictionOptions) -> nnUNetPredictor:
    """v2's predictor for the model in `folder`, every file read without unrestricted pickle."""
    folds = options.folds or sorted(p.name[len("fold_"):] for p in folder.glob("fold_*")
                                    if (p / options.checkpoint).is_file())
    paths = [folder / f"fold_{fold}" / options.checkpoint for fold in folds]
    missing = [str(path) for path in paths if not path.is_file()]
    if not paths or missing:
        raise ReIsoSegError(f"{missing[0] if missing else folder}: checkpoint not found")
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
    configuration_manager = plans_manager.get_configuration(options.configuration)
    network = TRAINERS[trainer_name].build_network_architecture(
        plans_manager, configuration_manager,
        determine_num_input_channels(plans_manager, configuration_manager, dataset_json),
        plans_manager.get_label_manager(dataset_json).num_segmentation_heads, enable_deep_supervision=False)
    device = resolve_device(options.device)
    predictor = nnUNetPredictor(tile_step_size=options.step_size, use_mirroring=not options.disable_tta,
                                perform_everything_on_device=device.type == "cuda", device=device, allow_tqdm=False)
    predictor.manual_initialization(network.to(device), plans_manager, configuration_manager,
                                    [checkpoint["network_weights"] for checkpoint in checkpoints], dataset_json,
                                    trainer_name, checkpoints[0].get("inference_allowed_mirroring_axes"))
    return predictor


def predict_folder(input_folder: str | os.PathLike, output_folder: str | os.PathLike, dataset: str | int,
                   trainer_name: str, options: V2PredictionOptions | None = None) -> Path:
    """Predict every `CASE_0000.nii.gz` of `input_folder` into `output_folder/CASE.nii.gz`, with its spacing."""
    options = options or V2PredictionOptions()
    cases = sorted(Path(input_folder).glob(f"*{CASE_SUFFIX}"))
    if not cases:
        raise ReIsoSegError(f"{input_folder}: no cases named CASE{CASE_SUFFIX}")
    folder = model_folder(options.configuration, trainer_name, dataset, options.plans_identifier)
    if not folder.is_dir():
        raise ReIsoSegError(f"{folder}: no v2 model (train it with `reisoseg train --engine v2`)")
    predictor = load_predictor(folder, options)
    output = Path(output_folder)
    output.mkdir(parents=True, exist_ok=True)
    with progress_bar(len(cases), "predicting", "case", enabled=options.progress) as bar:
        for path in cases:
            target = output / (path.name[:-len(CASE_SUFFIX)] + ".nii.gz")
            if options.overwrite_existing or not target.exists():
                image, spacing = read_nifti(path)
                check_image(str(path), image)
                with torch.no_grad():
                    segmentation = predictor.predict_single_npy_array(image[None].astype(np.float32),
                                                                      {"spacing": list(spacing)})
                write_nifti(target, np.asarray(segmentation).astype(np.uint8), spacing)
            bar.update()
    return output
