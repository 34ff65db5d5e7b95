"""A trained nnU-Net v1 model folder as the model of blockwise segmentation (`reisoseg.inference.model`'s protocols).

Everything that must agree with nnU-Net's in-memory predictor is taken from nnU-Net itself: the model and its fold
parameters are restored by `model_files.restore_trainer` (weights-only), each window is predicted by
the network's `_internal_maybe_mirror_and_pred_3D` (softmax, optional mirroring, Gaussian weighting by
`_get_gaussian`), the window grid is `_compute_steps_for_sliding_window`. Two things cannot be reused as they are,
because nnU-Net applies them to one volume in memory: the intensity normalisation (`Normalisation` applies the same
schemes with statistics the blockwise pipeline streams from the whole volume) and resampling
(`reisoseg.inference.resampling` computes any box of nnU-Net's whole-volume result). The rest of the computation is
`reisoseg.inference.windows.WindowPredictor`'s, shared with the v2 engine.
"""
from __future__ import annotations

import copy
import functools
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from reisoseg.errors import ReIsoSegError
from reisoseg.inference.windows import Normalisation, WindowPredictor, coarse_axis
from reisoseg.layout import FINAL_CHECKPOINT
from reisoseg.nnunet_v1.compat import redirected
from reisoseg.nnunet_v1.model_files import restore_trainer
from reisoseg.safe_loading import safe_load_pickle


@dataclass(frozen=True)
class NnunetV1Model:
    """A trained nnU-Net v1 model folder (ours or nnU-Net's trainers) as a `reisoseg.inference.model.ModelLoader`:
    small and picklable, so it can travel to Dask workers, which load it once each."""

    folder: str
    folds: tuple
    checkpoint: str = FINAL_CHECKPOINT
    mixed_precision: bool = True

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, folds: Sequence[str] | None = None,
                    checkpoint: str = FINAL_CHECKPOINT, fp32: bool = False) -> NnunetV1Model:
        """The model in `folder` (TRAINER__PLANS), with its folds and checkpoint checked to exist."""
        from reisoseg.nnunet_v1.prediction import checked_folds

        if folder is None or not Path(folder).is_dir():
            raise ReIsoSegError(f"{folder}: no such model folder (RESULTS_FOLDER/nnUNet/3d_fullres/TaskXXX/"
                                f"TRAINER__PLANS)")
        resolved = Path(folder).resolve()
        model = cls(str(resolved), tuple(checked_folds(resolved, folds, checkpoint)), checkpoint, not fp32)
        if (resolved / "postprocessing.json").is_file():
            print(f"note: {resolved / 'postprocessing.json'} (connected-component postprocessing) is not applied "
                  f"blockwise", file=sys.stderr)
        return model

    @property
    def num_classes(self) -> int:
        from reisoseg.nnunet_v1.sparse import output_classes

        return output_classes(_plans(self.folder))

    @property
    def use_nonzero_mask(self) -> bool:
        return bool(_plans(self.folder)["use_mask_for_norm"][0])

    @property
    def instance_settings(self) -> Any:
        from reisoseg.instances.target import model_instance_settings

        return model_instance_settings(self.folder)

    def settings(self) -> dict:
        return {"model": self.folder, "folds": [str(f) for f in self.folds], "checkpoint": self.checkpoint,
                "fp32": not self.mixed_precision}

    def load(self, device: torch.device) -> BlockPredictor:
        return BlockPredictor(self, device)


@functools.lru_cache(maxsize=8)
def _plans(folder: str) -> dict:
    """The plans the model was trained with (its folder's plans.pkl), read without unrestricted pickle."""
    path = Path(folder) / "plans.pkl"
    if not path.is_file():
        raise ReIsoSegError(f"{path}: not found; is {folder} a trained nnU-Net v1 model folder?")
    try:
        return safe_load_pickle(path)
    except pickle.UnpicklingError as error:
        raise ReIsoSegError(f"refusing to load a model file of {folder}: {str(error).strip().splitlines()[0]}") \
            from error


def _stage_plans(trainer) -> dict:
    return trainer.plans["plans_per_stage"][trainer.stage]


class BlockPredictor(WindowPredictor):
    """The networks of one or more folds, with the settings of the plans they were trained with."""

    def __init__(self, reference: NnunetV1Model, device: torch.device):
        if device.type == "cpu" and torch.cuda.is_available():
            raise ReIsoSegError("device cpu on a machine whose GPU torch sees: nnU-Net's window prediction moves "
                                "data to the GPU whenever one is visible; start Python with CUDA_VISIBLE_DEVICES= "
                                "(reisoseg segment --device cpu does this)")
        try:
            with redirected():
                from reisoseg.nnunet_v1 import trainers  # noqa: F401  (registers ours for nnU-Net's lookup by name)

                trainer, parameters = restore_trainer(reference.folder, list(reference.folds), reference.checkpoint,
                                                      mixed_precision=reference.mixed_precision)
        except pickle.UnpicklingError as error:
            message = str(error).strip().splitlines()[0]
            raise ReIsoSegError(f"refusing to load a model file of {reference.folder}: {message}") from error
        if trainer.plans.get("preprocessor_name", "GenericPreprocessor") != "GenericPreprocessor" or not trainer.threeD:
            raise ReIsoSegError(f"{reference.folder}: blockwise segmentation needs a 3D model with nnU-Net's "
                                f"GenericPreprocessor; use reisoseg predict for this one")
        if list(trainer.transpose_forward) != [0, 1, 2]:
            raise ReIsoSegError(f"{reference.folder}: the plans reorder the axes ({list(trainer.transpose_forward)}), "
                                f"which happens when z is not the coarsest axis; use reisoseg predict for this one")
        if trainer.regions_class_order is not None:
            raise ReIsoSegError(f"{reference.folder}: region-based models are not supported blockwise")
        self.device = device
        self.networks = []
        for fold_parameters in parameters:
            trainer.load_checkpoint_ram(fold_parameters, False)
            network = copy.deepcopy(trainer.network).to(device)
            network.do_ds = False
            network.eval()
            self.networks.append(network)
        self.num_classes = int(trainer.num_classes)
        self.patch_size = tuple(int(s) for s in trainer.patch_size)
        self.target_spacing = tuple(float(s) for s in _stage_plans(trainer)["current_spacing"])
        self.mirror_axes = tuple(trainer.data_aug_params["mirror_axes"])
        self.mixed_precision = reference.mixed_precision and device.type == "cuda"
        scheme = trainer.normalization_schemes[0]
        self.scheme = "zscore" if scheme not in ("CT", "CT2", "noNorm") else scheme
        if scheme == "CT2":
            raise ReIsoSegError(f"{reference.folder}: normalisation scheme CT2 is not supported blockwise")
        self.use_nonzero_mask = bool(trainer.use_mask_for_norm[0])
        self.intensity_properties = (trainer.intensity_properties or {}).get(0)
        export = trainer.plans.get("segmentation_export_params", {})
        # reisoseg.inference.resampling reads probabilities back as nnU-Net's default export does
        self.default_export = (export.get("force_separate_z") is None and export.get("interpolation_order", 1) == 1
                               and export.get("interpolation_order_z", 0) == 0)
        self._gaussian = None

    def normalisation(self, mean: float, std: float) -> Normalisation:
        """The plans' scheme with whole-volume statistics (ignored by the CT scheme, which uses the plans')."""
        if self.scheme == "CT":
            props = self.intensity_properties
            return Normalisation("CT", self.use_nonzero_mask, props["mean"], props["sd"], props["percentile_00_5"],
                                 props["percentile_99_5"])
        if self.scheme == "noNorm":
            return Normalisation("noNorm", self.use_nonzero_mask)
        return Normalisation("zscore", self.use_nonzero_mask, mean, std + 1e-8)

    def gaussian(self) -> np.ndarray:
        if self._gaussian is None:
            from nnunet.network_architecture.neural_network import SegmentationNetwork

            self._gaussian = SegmentationNetwork._get_gaussian(self.patch_size, sigma_scale=1.0 / 8)
        return self._gaussian

    def window_starts(self, patch_size: Sequence[int], shape: Sequence[int], step_size: float) -> list[list[int]]:
        from nnunet.network_architecture.neural_network import SegmentationNetwork

        return SegmentationNetwork._compute_steps_for_sliding_window(tuple(patch_size), tuple(shape), step_size)

    def predict_tile(self, tile: torch.Tensor, gaussian: torch.Tensor | None, mirroring: bool) -> torch.Tensor:
        """Softmax probabilities of one window (nnU-Net's `_internal_maybe_mirror_and_pred_3D`, which also applies
        the Gaussian), averaged over folds."""
        prediction = sum(network._internal_maybe_mirror_and_pred_3D(tile, self.mirror_axes, mirroring, gaussian)[0]
                         for network in self.networks)
        return prediction / len(self.networks) if len(self.networks) > 1 else prediction

    def separate_axis(self, spacing: Sequence[float]) -> int | None:
        from nnunet.configuration import RESAMPLING_SEPARATE_Z_ANISO_THRESHOLD
        from nnunet.preprocessing.preprocessing import get_do_separate_z, get_lowres_axis

        return coarse_axis(spacing, self.target_spacing,
                           lambda s: get_do_separate_z(s, RESAMPLING_SEPARATE_Z_ANISO_THRESHOLD), get_lowres_axis)
