"""Which nnU-Net engine a trained model folder belongs to, and the folder as a blockwise model of that engine.

A v1 model folder (TRAINER__PLANS) holds plans.pkl; a v2 one (TRAINER__PLANS__CONFIGURATION) holds plans.json. A
BioImage.IO package (model.zip) runs without an engine (reisoseg.bioimageio.package_model).
"""
from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Sequence

from reisoseg.errors import ReIsoSegError
from reisoseg.extras import extra_module
from reisoseg.inference.model import ModelLoader


def v2_engine_module(name: str) -> ModuleType:
    """`reisoseg.nnunet_v2.<name>`, or one line saying that the v2 engine needs the extra."""
    return extra_module(f"reisoseg.nnunet_v2.{name}", "nnunetv2", "the nnU-Net v2 engine")


def folder_engine(folder: str | os.PathLike) -> str:
    """'v2' for a folder with v2's plans.json, else 'v1'."""
    return "v2" if (Path(folder) / "plans.json").is_file() else "v1"


def is_package(model: str | os.PathLike | None) -> bool:
    """Whether `model` names a BioImage.IO package (model.zip) rather than a model folder or a configuration."""
    return model is not None and str(model).lower().endswith(".zip")


def model_from_folder(folder: str | os.PathLike, folds: Sequence[str] | None = None, checkpoint: str | None = None,
                      fp32: bool = False) -> ModelLoader:
    """The trained model in `folder`, on its engine, with its folds and checkpoint (default: the final one); or
    the ReIsoSeg network of a BioImage.IO package that `reisoseg export-bioimageio` wrote."""
    if is_package(folder):
        from reisoseg.bioimageio.package_model import BioImageIOModel

        return BioImageIOModel.from_package(folder)
    if folder_engine(folder) == "v2":
        if fp32:
            raise ReIsoSegError("fp32: not on the nnU-Net v2 engine (its predictor always uses mixed precision on "
                                "CUDA)")
        model = v2_engine_module("block_predictor").NnunetV2Model
        return model.from_folder(folder, folds, checkpoint or model.checkpoint)
    from reisoseg.layout import FINAL_CHECKPOINT
    from reisoseg.nnunet_v1.block_predictor import NnunetV1Model

    return NnunetV1Model.from_folder(folder, folds, checkpoint or FINAL_CHECKPOINT, fp32)


def fold_validation_files(folder: str | os.PathLike, fold: str) -> list[tuple[str, Path, Path]]:
    """(case, image, object ids) of the training cases that `fold` of the model in `folder` held out, on its
    engine's split."""
    if folder_engine(folder) == "v2":
        return v2_engine_module("tasks").fold_validation_files(folder, fold)
    from reisoseg.nnunet_v1.tasks import fold_validation_files as v1_fold_validation_files

    return v1_fold_validation_files(folder, fold)
