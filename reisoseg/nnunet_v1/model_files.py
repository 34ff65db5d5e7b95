"""nnU-Net v1's trainer and checkpoints restored from a model folder, every file read through reisoseg.safe_loading
(nnU-Net's own loaders would run code from a poisoned file)."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from reisoseg.safe_loading import safe_load_checkpoint


def restore_trainer(folder: str | os.PathLike, folds: Sequence[int | str] | int | str, checkpoint_name: str,
                    mixed_precision: bool | None = None) -> tuple[Any, list[dict[str, Any]]]:
    """nnU-Net v1's trainer of a model folder, initialised for inference, and the checkpoint of each fold, every
    file read through the loaders above (nnU-Net's `load_model_and_checkpoint_files`, made safe).

    Call it inside `compat.redirected()`: nnU-Net's `restore_model` then reads the `.pkl` safely and finds our
    trainers."""
    from nnunet.training.model_restore import restore_model

    if isinstance(folds, (str, int)):
        folds = [folds]
    fold_folders = [Path(folder) / ("all" if str(fold) == "all" else f"fold_{fold}") for fold in folds]
    trainer = restore_model(str(fold_folders[0] / f"{checkpoint_name}.model.pkl"), fp16=mixed_precision)
    trainer.output_folder = trainer.output_folder_base = str(folder)
    trainer.update_fold(0)
    trainer.initialize(False)
    return trainer, [safe_load_checkpoint(fold_folder / f"{checkpoint_name}.model") for fold_folder in fold_folders]


def load_checkpoint_into(trainer: Any, path: str | os.PathLike, train: bool) -> None:
    """What nnU-Net v1's `load_checkpoint` does for any trainer (its log line included), with the file read by
    `safe_load_checkpoint`."""
    trainer.print_to_log_file("loading checkpoint", path, "train=", train)
    if not trainer.was_initialized:
        trainer.initialize(train)
    trainer.load_checkpoint_ram(safe_load_checkpoint(path), train)
