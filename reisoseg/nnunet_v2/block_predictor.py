"""A trained nnU-Net v2 model folder as the model of blockwise segmentation (`reisoseg.inference.model`'s protocols).

The predictor is v2's own, set up by `reisoseg.nnunet_v2.prediction.load_predictor` (weights-only). Each window is
predicted by its `_internal_maybe_mirror_and_predict` (logits, optional mirroring), weighted by v2's
`compute_gaussian`, on v2's `compute_steps_for_sliding_window` grid; v2's intensity schemes are applied with the
statistics the blockwise pipeline streams from the whole volume. v2 averages logits and resamples them back before
its softmax, and so does this model (`WindowPredictor.finish`).
"""
from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from nnunetv2.inference.sliding_window_prediction import compute_gaussian, compute_steps_for_sliding_window
from nnunetv2.preprocessing.resampling.default_resampling import get_do_separate_z, get_lowres_axis
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

from reisoseg.errors import ReIsoSegError
from reisoseg.inference.windows import Normalisation, WindowPredictor, coarse_axis
from reisoseg.instances.target import model_instance_settings
from reisoseg.layout import v2_configuration
from reisoseg.nnunet_v2.prediction import V2PredictionOptions, load_predictor, trained_folds

SCHEMES = {"ZScoreNormalization": "zscore", "CTNormalization": "CT", "NoNormalization": "noNorm"}
DEFAULT_DATA_RESAMPLING = {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None}
DEFAULT_PROBABILITY_RESAMPLING = {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None}


@dataclass(frozen=True)
class NnunetV2Model:
    """A trained nnU-Net v2 model folder (TRAINER__PLANS__CONFIGURATION) as a `ModelLoader`: small and picklable,
    so it can travel to Dask workers, which load it once each."""

    folder: str
    folds: tuple
    checkpoint: str = V2PredictionOptions.checkpoint

    @classmethod
    def from_folder(cls, folder: str | Path, folds: Sequence[str] | None = None,
                    checkpoint: str = V2PredictionOptions.checkpoint) -> NnunetV2Model:
        """The model in `folder`, with its folds and checkpoint checked to exist."""
        if folder is None or not (Path(folder) / "plans.json").is_file():
            raise ReIsoSegError(f"{folder}: not a trained nnU-Net v2 model folder (nnUNet_results/DatasetXXX/"
                                f"TRAINER__PLANS__CONFIGURATION, with plans.json)")
        resolved = Path(folder).resolve()
        return cls(str(resolved), tuple(trained_folds(resolved, folds, checkpoint)), checkpoint)

    @property
    def configuration(self) -> str:
        return v2_configuration(self.folder)

    @property
    def num_classes(self) -> int:
        plans, dataset = _model_files(self.folder)
        return PlansManager(plans).get_label_manager(dataset).num_segmentation_heads

    @property
    def use_nonzero_mask(self) -> bool:
        return bool(_configuration(self.folder, self.configuration)["use_mask_for_norm"][0])

    @property
    def instance_settings(self) -> Any:
        return model_instance_settings(self.folder)

    def settings(self) -> dict:
        return {"model": self.folder, "engine": "v2", "folds": [str(f) for f in self.folds],
                "checkpoint": self.checkpoint}

    def load(self, device: torch.device) -> V2BlockPredictor:
        return V2BlockPredictor(self, device)


@functools.lru_cache(maxsize=8)
def _model_files(folder: str) -> tuple[dict, dict]:
    """plans.json and dataset.json of a model folder."""
    return tuple(json.loads((Path(folder) / name).read_text()) for name in ("plans.json", "dataset.json"))


def _configuration(folder: str, configuration: str) -> dict:
    return PlansManager(_model_files(folder)[0]).get_configuration(configuration).configuration


class V2BlockPredictor(WindowPredictor):
    """The networks of one or more folds, with the settings of the plans they were trained with."""

    def __init__(self, reference: NnunetV2Model, device: torch.device):
        self.predictor = load_predictor(Path(reference.folder), reference.configuration, reference.folds,
                                        reference.checkpoint, device)
        plans, configuration = self.predictor.plans_manager, self.predictor.configuration_manager
        if list(plans.transpose_forward) != [0, 1, 2]:
            raise ReIsoSegError(f"{reference.folder}: the plans reorder the axes ({list(plans.transpose_forward)}), "
                                f"which happens when z is not the coarsest axis; use reisoseg predict for this one")
        if self.predictor.label_manager.has_regions:
            raise ReIsoSegError(f"{reference.folder}: region-based models are not supported blockwise")
        if len(configuration.patch_size) != 3:
            raise ReIsoSegError(f"{reference.folder}: blockwise segmentation needs a 3D configuration")
        scheme = configuration.normalization_schemes[0]
        if scheme not in SCHEMES:
            raise ReIsoSegError(f"{reference.folder}: normalisation {scheme} is not supported blockwise; use "
                                f"reisoseg predict for this one")
        self.scheme = SCHEMES[scheme]
        self.intensity_properties = plans.foreground_intensity_properties_per_channel.get("0")
        self.use_nonzero_mask = bool(configuration.use_mask_for_norm[0])
        self.device = device
        self.networks = []
        for parameters in self.predictor.list_of_parameters:
            network = copy.deepcopy(self.predictor.network)
            network.load_state_dict(parameters)
            self.networks.append(network.to(device).eval())
        self.num_classes = int(self.predictor.label_manager.num_segmentation_heads)
        self.patch_size = tuple(int(s) for s in configuration.patch_size)
        self.target_spacing = tuple(float(s) for s in configuration.spacing)
        self.mixed_precision = device.type == "cuda"  # v2's predictor always autocasts on CUDA
        self.default_export = (
            configuration.configuration.get("resampling_fn_data") == "resample_data_or_seg_to_shape"
            and configuration.configuration.get("resampling_fn_data_kwargs") == DEFAULT_DATA_RESAMPLING
            and configuration.configuration.get("resampling_fn_probabilities") == "resample_data_or_seg_to_shape"
            and configuration.configuration.get("resampling_fn_probabilities_kwargs") == DEFAULT_PROBABILITY_RESAMPLING)
        self._gaussian = None

    accumulator = np.float16  # v2 sums weighted logits in half precision, on every device

    def uses_gaussian(self, windows: int) -> bool:
        return True  # v2 weights even a single window, which in half precision is not a no-op

    def normalisation(self, mean: float, std: float) -> Normalisation:
        """The plans' scheme with whole-volume statistics (ignored by the CT scheme, which uses the plans')."""
        if self.scheme == "CT":
            props = self.intensity_properties
            return Normalisation("CT", self.use_nonzero_mask, props["mean"], max(props["std"], 1e-8),
                                 props["percentile_00_5"], props["percentile_99_5"])
        if self.scheme == "noNorm":
            return Normalisation("noNorm", self.use_nonzero_mask)
        return Normalisation("zscore", self.use_nonzero_mask, mean, max(std, 1e-8))

    def gaussian(self) -> np.ndarray:
        if self._gaussian is None:  # v2's weights, float16 as v2 makes them
            self._gaussian = compute_gaussian(self.patch_size, sigma_scale=1.0 / 8, value_scaling_factor=10,
                                              device=torch.device("cpu")).float().numpy()
        return self._gaussian

    def window_starts(self, patch_size: Sequence[int], shape: Sequence[int], step_size: float) -> list[list[int]]:
        return compute_steps_for_sliding_window(tuple(shape), tuple(patch_size), step_size)

    def predict_tile(self, tile: torch.Tensor, gaussian: torch.Tensor | None, mirroring: bool) -> torch.Tensor:
        """Logits of one window, mirrored by v2's predictor, averaged over folds and weighted by the Gaussian."""
        self.predictor.use_mirroring = mirroring
        tile = tile.to(self.device)
        prediction = 0
        for network in self.networks:
            self.predictor.network = network
            prediction = prediction + self.predictor._internal_maybe_mirror_and_predict(tile)[0].float()
        prediction = prediction / len(self.networks) if len(self.networks) > 1 else prediction
        return prediction * gaussian.to(prediction.device) if gaussian is not None else prediction

    def separate_axis(self, spacing: Sequence[float]) -> int | None:
        return coarse_axis(spacing, self.target_spacing, get_do_separate_z, get_lowres_axis)

    def finish(self, outputs: np.ndarray) -> np.ndarray:
        """v2's softmax over the resampled logits."""
        return torch.softmax(torch.from_numpy(outputs), 0).numpy()
