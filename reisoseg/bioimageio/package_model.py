"""A BioImage.IO package that `reisoseg export-bioimageio` wrote, run back as a model of `reisoseg segment` and
`reisoseg predict` (`-m model.zip`), so that a lab can use a shared model without its results folder.

Only the state dict is read: its sha256 is checked against the description, then it is loaded with
`torch.load(weights_only=True)`. The TorchScript file is never loaded (it can hold code). The package carries no
engine, so the sliding window here is our own: a grid of half-overlapping windows of the training patch, each
weighted by a Gaussian, optional mirroring along every axis, and nnU-Net's rule for resampling data at another
spacing than the planned one (reisoseg.inference.resampling). Reading a package needs neither bioimageio library:
the description is YAML, the weights a torch file.
"""
from __future__ import annotations

import functools
import hashlib
import io
import itertools
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import yaml
from scipy.ndimage import gaussian_filter

from reisoseg.errors import ReIsoSegError
from reisoseg.inference.windows import Normalisation, WindowPredictor, coarse_axis
from reisoseg.instances.target import InstanceSettings
from reisoseg.network import ReIsoSegRMV6

ARCHITECTURE = ("reisoseg.network", "ReIsoSegRMV6")
ANISOTROPY_THRESHOLD = 3.0  # spacing ratio above which the coarse axis is resampled section by section


@functools.lru_cache(maxsize=4)
def _description(path: str) -> dict:
    """The package's rdf.yaml, checked to describe a ReIsoSeg network."""
    try:
        with zipfile.ZipFile(path) as package:
            description = yaml.safe_load(package.read("rdf.yaml"))
    except (OSError, KeyError, zipfile.BadZipFile, yaml.YAMLError) as error:
        raise ReIsoSegError(f"{path}: not a BioImage.IO package ({error})") from error
    weights = (description.get("weights") or {}).get("pytorch_state_dict") or {}
    architecture = weights.get("architecture") or {}
    if (architecture.get("import_from"), architecture.get("callable")) != ARCHITECTURE or \
            "reisoseg" not in (description.get("config") or {}):
        raise ReIsoSegError(f"{path}: not a package of a ReIsoSeg network (written by reisoseg export-bioimageio)")
    return description


@dataclass(frozen=True)
class BioImageIOModel:
    """A ReIsoSeg package as a `reisoseg.inference.model.ModelLoader`."""

    path: str

    @classmethod
    def from_package(cls, path: str | Path) -> BioImageIOModel:
        if not Path(path).is_file():
            raise ReIsoSegError(f"{path}: no such package")
        model = cls(str(Path(path).resolve()))
        _description(model.path)
        return model

    @property
    def config(self) -> dict:
        return _description(self.path)["config"]["reisoseg"]

    @property
    def num_classes(self) -> int:
        return int(self.kwargs["num_classes"])

    @property
    def kwargs(self) -> dict[str, Any]:
        return _description(self.path)["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]

    @property
    def use_nonzero_mask(self) -> bool:
        return False

    @property
    def instance_settings(self) -> InstanceSettings | None:
        record = self.config.get("instances")
        return None if record is None else InstanceSettings.from_dict(record)

    def settings(self) -> dict:
        return {"model": self.path, "weights_sha256": _description(self.path)["weights"]["pytorch_state_dict"].get(
            "sha256")}

    def load(self, device: torch.device) -> PackagePredictor:
        return PackagePredictor(self, device)


class PackagePredictor(WindowPredictor):
    """The package's network on one device, predicting windows of its training patch."""

    def __init__(self, model: BioImageIOModel, device: torch.device):
        description = _description(model.path)
        weights = description["weights"]["pytorch_state_dict"]
        try:
            with zipfile.ZipFile(model.path) as package:
                data = package.read(weights["source"])
            if weights.get("sha256") != hashlib.sha256(data).hexdigest():
                raise ReIsoSegError(f"{model.path}: its weights ({weights['source']}) do not match the sha256 its "
                                    f"description gives; the package was changed after export")
            state_dict = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:  # torch's weights-only loader met something that is not weights
            raise ReIsoSegError(f"refusing to load a model file of {model.path}: "
                                f"{str(error).strip().splitlines()[0]}") from error
        except (KeyError, RuntimeError, zipfile.BadZipFile) as error:
            raise ReIsoSegError(f"{model.path}: cannot read its weights ({str(error).splitlines()[0]})") from error
        network = ReIsoSegRMV6(**model.kwargs)
        network.load_state_dict(state_dict)
        self.network = network.to(device).eval()
        self.device = device
        self.num_classes = model.num_classes
        self.patch_size = tuple(int(s) for s in model.config["patch_size"])
        self.target_spacing = tuple(float(s) for s in model.config["spacing_nm"])
        self.mixed_precision = device.type == "cuda"
        self.default_export = True
        preprocessing = [step["id"] for step in description["inputs"][0].get("preprocessing", [])]
        self.scheme = "zscore" if "zero_mean_unit_variance" in preprocessing else "noNorm"

    def normalisation(self, mean: float, std: float) -> Normalisation:
        """The package normalises each input; blockwise, the whole volume's statistics stand in for it."""
        return Normalisation(self.scheme, False, mean, std + 1e-8)

    def window_starts(self, patch_size: Sequence[int], shape: Sequence[int], step_size: float) -> list[list[int]]:
        """Evenly spaced windows that cover each axis, at most `step_size` patches apart."""
        starts = []
        for size, patch in zip(shape, patch_size):
            count = math.ceil((size - patch) / (patch * step_size)) + 1 if size > patch else 1
            spacing = (size - patch) / (count - 1) if count > 1 else 0
            starts.append([round(index * spacing) for index in range(count)])
        return starts

    @functools.cached_property
    def _weights(self) -> np.ndarray:
        impulse = np.zeros(self.patch_size, np.float32)
        impulse[tuple(s // 2 for s in self.patch_size)] = 1
        weights = gaussian_filter(impulse, [s / 8 for s in self.patch_size], mode="constant")
        weights /= weights.max()
        weights[weights == 0] = weights[weights > 0].min()
        return weights.astype(np.float32)

    def gaussian(self) -> np.ndarray:
        return self._weights

    def predict_tile(self, tile: torch.Tensor, gaussian: torch.Tensor | None, mirroring: bool) -> torch.Tensor:
        """Softmax of one window, averaged over its mirror images along every subset of axes if asked."""
        tile = tile.to(self.device)
        flips = [axes for count in range(4) for axes in itertools.combinations((2, 3, 4), count)] if mirroring \
            else [()]
        outputs = []
        for axes in flips:
            probabilities = torch.softmax(self.network(tile.flip(axes) if axes else tile), 1)
            outputs.append(probabilities.flip(axes) if axes else probabilities)
        prediction = torch.stack(outputs).mean(0)[0]
        return prediction * gaussian.to(prediction.device) if gaussian is not None else prediction

    def separate_axis(self, spacing: Sequence[float]) -> int | None:
        """nnU-Net's rule: the one coarsest axis, where the spacing ratio exceeds the threshold."""
        return coarse_axis(spacing, self.target_spacing,
                           lambda s: max(s) / min(s) > ANISOTROPY_THRESHOLD,
                           lambda s: [axis for axis, value in enumerate(s) if value == max(s)])
