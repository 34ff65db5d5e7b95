"""A trained nnU-Net v1 model folder as the model of blockwise segmentation (`reisoseg.inference.model`'s protocols).

Everything that must agree with nnU-Net's in-memory predictor is taken from nnU-Net itself: the model and its fold
parameters are restored by `model_files.restore_trainer` (weights-only), each window is predicted by
the network's `_internal_maybe_mirror_and_pred_3D` (softmax, optional mirroring, Gaussian weighting by
`_get_gaussian`), the window grid is `_compute_steps_for_sliding_window`. Two things cannot be reused as they are,
because nnU-Net applies them to one volume in memory: the intensity normalisation (`Normalisation` applies the same
schemes with statistics the blockwise pipeline streams from the whole volume) and resampling
(`reisoseg.nnunet_v1.resampling` computes any box of nnU-Net's whole-volume result).
"""
from __future__ import annotations

import contextlib
import copy
import functools
import math
import os
import pickle
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from reisoseg.errors import ReIsoSegError
from reisoseg.inference.model import CroppedVolume
from reisoseg.inference.tiles import clipped, windows_touching, zero_padded
from reisoseg.layout import FINAL_CHECKPOINT
from reisoseg.nnunet_v1.compat import redirected
from reisoseg.nnunet_v1.model_files import restore_trainer
from reisoseg.nnunet_v1.resampling import axis_maps, resample_back, resample_box
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


@dataclass(frozen=True)
class Normalisation:
    """nnU-Net v1's intensity schemes (GenericPreprocessor) with whole-volume statistics passed in."""

    scheme: str
    use_nonzero_mask: bool
    mean: float = 0.0
    std: float = 1.0
    clip_low: float | None = None
    clip_high: float | None = None

    def apply(self, data: np.ndarray) -> np.ndarray:
        """Normalise a float32 region in place and return it; voxels outside the nonzero mask become 0 if masked."""
        mask = data != 0 if self.use_nonzero_mask else None
        if self.clip_low is not None:
            np.clip(data, self.clip_low, self.clip_high, out=data)
        if self.scheme != "noNorm":
            data -= np.float32(self.mean)
            data /= np.float32(self.std)
        if mask is not None:
            data[~mask] = 0
        return data


def window_starts(patch_size: Sequence[int], shape: Sequence[int], step_size: float) -> list[list[int]]:
    """nnU-Net's sliding-window start positions along each axis of an image of `shape` (>= the patch)."""
    from nnunet.network_architecture.neural_network import SegmentationNetwork

    return SegmentationNetwork._compute_steps_for_sliding_window(tuple(patch_size), tuple(shape), step_size)


def _stage_plans(trainer) -> dict:
    return trainer.plans["plans_per_stage"][trainer.stage]


class BlockPredictor:
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
        # reisoseg.nnunet_v1.resampling reads probabilities back as nnU-Net's default export does
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

    @torch.no_grad()
    def predict_windows(self, region: np.ndarray, starts: Sequence[Sequence[int]], *, use_gaussian: bool,
                        mirroring: bool) -> np.ndarray:
        """Class probabilities over `region` (z, y, x), from the windows starting at the product of `starts`.

        Windows are visited and accumulated in nnU-Net's order, each weighted by the Gaussian (when the image has
        more than one window) and averaged over folds, so that a region covering the same windows as nnU-Net gives
        the same probabilities.
        """
        patch = self.patch_size
        weight = self.gaussian() if use_gaussian else np.ones(patch, dtype=np.float32)
        mult = torch.from_numpy(weight) if use_gaussian else None
        summed = np.zeros((self.num_classes, *region.shape), dtype=np.float32)
        weights = np.zeros(region.shape, dtype=np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(region, dtype=np.float32))[None, None]
        autocast = torch.autocast("cuda", enabled=self.mixed_precision) if self.device.type == "cuda" else \
            contextlib.nullcontext()
        for z in starts[0]:
            for y in starts[1]:
                for x in starts[2]:
                    window = (slice(z, z + patch[0]), slice(y, y + patch[1]), slice(x, x + patch[2]))
                    tile = tensor[(slice(None), slice(None), *window)]
                    prediction = None
                    with autocast:
                        for network in self.networks:
                            fold = network._internal_maybe_mirror_and_pred_3D(tile, self.mirror_axes, mirroring,
                                                                             mult)[0]
                            prediction = fold if prediction is None else prediction + fold
                    if len(self.networks) > 1:
                        prediction /= len(self.networks)
                    summed[(slice(None), *window)] += prediction.float().cpu().numpy()
                    weights[window] += weight
        summed /= weights[None]
        return summed

    def predict_core(self, volume: CroppedVolume, core: Sequence[tuple[int, int]], *, step_size: float,
                     mirroring: bool) -> np.ndarray:
        """Class probabilities of `core` (cropped coordinates) from the windows of nnU-Net's whole-volume grid that
        touch it; at another spacing than the plans', from the box of nnU-Net's whole-volume resampling they need."""
        stats = volume.statistics
        cropped = list(volume.shape)
        normalisation = self.normalisation(stats.mean, stats.std)
        maps = axis_maps(cropped, volume.spacing, self.target_spacing, self.separate_axis(volume.spacing))
        resampled = [m.target for m in maps]
        if resampled != cropped and not self.default_export:
            raise ReIsoSegError(f"{volume.source}: this model's plans export with non-default resampling; segment "
                                f"data at the planned spacing {list(self.target_spacing)} nm, or use reisoseg predict")
        needed = core if resampled == cropped else [m.target_range_for_linear(lo, hi) for m, (lo, hi) in
                                                    zip(maps, core)]
        region, starts, counts = windows_touching(needed, resampled, self.patch_size, step_size, window_starts)
        inner = clipped(region, resampled)
        if resampled == cropped:
            values = volume.read(inner)
        else:
            source = [m.source_range(lo, hi) for m, (lo, hi) in zip(maps, inner)]
            clip = ((np.array(stats.section_min), np.array(stats.section_max)) if maps[0].nearest
                    else (min(stats.section_min), max(stats.section_max)))
            values = resample_box(volume.read(source), [lo for lo, _ in source], maps, inner, clip)
        image = zero_padded(normalisation.apply(values), inner, region)  # nnU-Net pads normalised data with 0
        probabilities = self.predict_windows(image, starts, use_gaussian=math.prod(counts) > 1, mirroring=mirroring)
        kept = probabilities[(slice(None), *(slice(lo - r[0], hi - r[0]) for (lo, hi), r in zip(needed, region)))]
        if resampled == cropped:
            return kept
        return resample_back(kept, [lo for lo, _ in needed], maps, core)

    def separate_axis(self, spacing: Sequence[float]) -> int | None:
        """The axis nnU-Net resamples by nearest neighbour (section by section in-plane), or None."""
        from nnunet.configuration import RESAMPLING_SEPARATE_Z_ANISO_THRESHOLD
        from nnunet.preprocessing.preprocessing import get_do_separate_z, get_lowres_axis

        for candidate in (spacing, self.target_spacing):
            if get_do_separate_z(candidate, RESAMPLING_SEPARATE_Z_ANISO_THRESHOLD):
                axes = list(get_lowres_axis(candidate))
                if len(axes) != 1:
                    return None
                if axes[0] != 0:
                    raise ReIsoSegError(f"spacing {list(spacing)} nm: the coarsest axis is not z; blockwise "
                                        f"resampling needs z to be the coarse axis")
                return 0
        return None
