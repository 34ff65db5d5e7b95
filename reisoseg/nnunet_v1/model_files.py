"""nnU-Net v1's trainer and checkpoints restored from a model folder, every file read through reisoseg.safe_loading
(nnU-Net's own loaders would run code from a poisoned file)."""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reisoseg.errors import ReIsoSegError
from reisoseg.layout import TRAINER_SETTINGS_FILE, fold_folder
from reisoseg.network.trained import TrainedNetwork, strip_prefix
from reisoseg.nnunet_v1.tasks import parse_fold
from reisoseg.safe_loading import safe_load_checkpoint, safe_load_pickle

_INIT_FOLD, _INIT_OUTPUT_FOLDER = 1, 2  # positions in nnU-Net v1's trainer `init_args`


def restore_trainer(folder: str | os.PathLike, folds: Sequence[int | str] | int | str, checkpoint_name: str,
                    mixed_precision: bool | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """nnU-Net v1's trainer of a model folder, initialised for inference, and the checkpoint of each fold, every
    file read through the loaders above (nnU-Net's `load_model_and_checkpoint_files`, made safe).

    Unlike nnU-Net's `restore_model`, the trainer is built on the folder named here, not on the training-time folder
    its `.pkl` records (another machine's path, or another model's), and loading writes nothing: no log file, no
    `fold_0` folder. Call it inside `compat.redirected()`, where nnU-Net's trainer lookup finds ours."""
    import nnunet
    from nnunet.training import model_restore

    if isinstance(folds, (str, int)):
        folds = [folds]
    folds = [parse_fold(fold) for fold in folds]
    fold_folders = [fold_folder(folder, fold) for fold in folds]
    record_file = fold_folders[0] / f"{checkpoint_name}.model.pkl"
    record = safe_load_pickle(record_file)
    if not isinstance(record, dict) or not {"init", "name", "plans"} <= set(record):
        raise ReIsoSegError(f"{record_file}: not an nnU-Net v1 model record (it needs init, name and plans)")
    trainer_class = model_restore.recursive_find_python_class(
        [os.path.join(nnunet.__path__[0], "training", "network_training")], record["name"],
        current_module="nnunet.training.network_training")
    if trainer_class is None:
        raise ReIsoSegError(f"{record_file}: trainer {record['name']} is neither one of ReIsoSeg's nor nnU-Net's")
    init = list(record["init"])
    init[_INIT_FOLD], init[_INIT_OUTPUT_FOLDER] = folds[0], str(folder)
    trainer = trainer_class(*init)
    trainer.log_file = os.devnull  # its messages go to the console only
    if mixed_precision is not None:
        trainer.fp16 = mixed_precision
    trainer.process_plans(record["plans"])
    trainer.initialize(False)
    return trainer, [safe_load_checkpoint(path / f"{checkpoint_name}.model") for path in fold_folders]


def load_checkpoint_into(trainer: Any, path: str | os.PathLike, train: bool) -> None:
    """What nnU-Net v1's `load_checkpoint` does for any trainer (its log line included), with the file read by
    `safe_load_checkpoint`."""
    trainer.print_to_log_file("loading checkpoint", path, "train=", train)
    if not trainer.was_initialized:
        trainer.initialize(train)
    trainer.load_checkpoint_ram(safe_load_checkpoint(path), train)


def trained_network(folder: str | os.PathLike, fold: str | int, checkpoint_name: str) -> TrainedNetwork:
    """The ReIsoSeg network of one fold of a v1 model folder, read without nnU-Net and without unrestricted pickle:
    weights from the checkpoint, the pattern and patch from the fold's reisoseg.json, spacing and normalisation
    from plans.pkl, class names from the task's dataset.json where nnU-Net's folders still hold it."""
    folder = Path(folder)
    folder_of_fold = fold_folder(folder, fold)
    settings_file = folder_of_fold / TRAINER_SETTINGS_FILE
    if not settings_file.is_file():
        raise ReIsoSegError(f"{settings_file}: not found; only ReIsoSeg trainers' models can be exported (nnU-Net's "
                            f"networks are not ReIsoSegRMV6)")
    settings = json.loads(settings_file.read_text())
    plans = safe_load_pickle(folder / "plans.pkl")
    stage = plans["plans_per_stage"][len(plans["plans_per_stage"]) - 1]
    scheme = plans["normalization_schemes"][0]
    if scheme == "CT" or scheme == "CT2" or plans["use_mask_for_norm"][0]:
        raise ReIsoSegError(f"{folder}: its plans normalise with {'the nonzero mask' if scheme == 'nonCT' else scheme}"
                            f", which BioImage.IO's preprocessing cannot express (only z-score over the whole input)")
    weights = safe_load_checkpoint(folder_of_fold / f"{checkpoint_name}.model")["state_dict"]
    return TrainedNetwork(
        ani_scale=tuple(settings["ani_scale"]), input_channels=int(plans["num_modalities"]),
        class_names=_class_names(folder, int(plans["num_classes"]) + 1, settings.get("class_names")),
        state_dict=strip_prefix(weights, "net."),
        spacing=tuple(float(s) for s in stage["current_spacing"]), patch_size=tuple(settings["patch_size"]),
        normalisation="none" if scheme == "noNorm" else "zscore", trainer=settings["trainer"])


def dataset_class_names(dataset_json: Path | None, count: int) -> tuple[str, ...]:
    """The names of label values 0..count-1 in a task's dataset.json; class_N where it names none (or there is
    none)."""
    labels = json.loads(dataset_json.read_text())["labels"] if dataset_json is not None and dataset_json.is_file() \
        else {}
    return tuple(labels.get(str(value), f"class_{value}") for value in range(count))


def _class_names(folder: Path, count: int, recorded: list[str] | None) -> tuple[str, ...]:
    """The labels' names as training recorded them beside the weights, else from the task's dataset.json where
    nnU-Net's folders (nnUNet_preprocessed, nnUNet_raw_data_base) still hold it, else background and class_N."""
    if recorded is not None and len(recorded) == count:
        return tuple(recorded)
    task = folder.parent.name
    candidates = (Path(os.environ.get(variable, "/nonexistent"), *parts, "dataset.json") for variable, parts in
                  (("nnUNet_preprocessed", (task,)), ("nnUNet_raw_data_base", ("nnUNet_raw_data", task))))
    return dataset_class_names(next((path for path in candidates if path.is_file()), None), count)
