"""Which nnU-Net engine a trained model folder belongs to, and the folder as a blockwise model of that engine.

A v1 model folder (TRAINER__PLANS) holds plans.pkl; a v2 one (TRAINER__PLANS__CONFIGURATION) holds plans.json.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Sequence

from reisoseg.errors import ReIsoSegError
from reisoseg.inference.model import ModelLoader


def v2_engine_module(name: str) -> ModuleType:
    """`reisoseg.nnunet_v2.<name>`, or one line saying that the v2 engine needs the extra."""
    try:
        return importlib.import_module(f"reisoseg.nnunet_v2.{name}")
    except ModuleNotFoundError as error:
        raise ReIsoSegError(f"the nnU-Net v2 engine needs the nnunetv2 extra ({error.name} is missing): "
                            f"pip install 'reisoseg[nnunetv2]'") from error


def folder_engine(folder: str | os.PathLike) -> str:
    """'v2' for a folder with v2's plans.json, else 'v1'."""
    return "v2" if (Path(folder) / "plans.json").is_file() else "v1"


def model_from_folder(folder: str | os.PathLike, folds: Sequence[str] | None = None, checkpoint: str | None = None,
                      fp32: bool = False) -> ModelLoader:
    """The trained model in `folder`, on its engine, with its folds and checkpoint (default: the final one)."""
    if folder_engine(folder) == "v2":
        if fp32:
            raise ReIsoSegError("fp32: not on the nnU-Net v2 engine (its predictor always uses mixed precision on "
                                "CUDA)")
        model = v2_engine_module("block_predictor").NnunetV2Model
        return model.from_folder(folder, folds, checkpoint or model.checkpoint)
    from reisoseg.layout import FINAL_CHECKPOINT
    from reisoseg.nnunet_v1.block_predictor import NnunetV1Model

    return NnunetV1Model.from_folder(folder, folds, checkpoint or FINAL_CHECKPOINT, fp32)
