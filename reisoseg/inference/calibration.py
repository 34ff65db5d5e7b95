"""Calibrating a model's instance decoding on validation volumes: predict their probabilities once with any
`ModelLoader`, then search the decoding grid on them (`reisoseg.instances.calibration`)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import zarr

from reisoseg.errors import ReIsoSegError
from reisoseg.inference.model import ModelLoader
from reisoseg.inference.segment import segment
from reisoseg.inference.store import PROBABILITIES
from reisoseg.instances.calibration import Calibration, CalibrationGrid, ValidationCase, calibrate
from reisoseg.instances.target import InstanceSettings
from reisoseg.io.volume import open_volume, volume_stem


def validation_case(model: ModelLoader, name: str, image: np.ndarray, spacing: Sequence[float],
                    reference: np.ndarray, *, tta: bool = False, step_size: float = 0.5,
                    device: str | None = None) -> ValidationCase:
    """One validation volume with the model's class probabilities, predicted as `reisoseg segment` predicts."""
    with tempfile.TemporaryDirectory(prefix="reisoseg_calibrate_") as scratch:
        output = segment(image, spacing, model, Path(scratch) / "validation.zarr", probabilities=True, tta=tta,
                         step_size=step_size, device=device, progress=False)
        probabilities = np.asarray(zarr.open_array(str(Path(output) / PROBABILITIES), mode="r")[...], np.float32)
    return ValidationCase(name, probabilities, tuple(float(s) for s in spacing), reference)


def _volumes(folder: Path) -> dict[str, Path]:
    """Volumes of a folder by stem; nnU-Net's image naming (CASE_0000.nii.gz) counts as CASE."""
    found = {}
    for path in sorted(folder.iterdir()):
        stem = volume_stem(path)
        found[stem[:-len("_0000")] if stem.endswith("_0000") else stem] = path
    return found


def folder_pairs(images: str | os.PathLike, references: str | os.PathLike) -> list[tuple[str, Path, Path]]:
    """(name, image file, object id file) of the volumes in `images` paired by name with those in `references`."""
    images, references = Path(images), Path(references)
    for folder in (images, references):
        if not folder.is_dir():
            raise ReIsoSegError(f"{folder}: no such folder")
    image_files, reference_files = _volumes(images), _volumes(references)
    names = sorted(set(image_files) & set(reference_files))
    if not names:
        raise ReIsoSegError(f"{references}: no volume named as one in {images} (CASE.EXT, or CASE_0000.EXT for "
                            f"images)")
    return [(name, image_files[name], reference_files[name]) for name in names]


def read_pairs(files: Sequence[tuple[str, Path, Path]],
               spacing: Sequence[float] | None = None) -> list[tuple[str, np.ndarray, tuple, np.ndarray]]:
    """(name, image, spacing, object ids) of (name, image file, object id file) triples."""
    pairs = []
    for name, image_file, reference_file in files:
        image, reference = open_volume(image_file), open_volume(reference_file)
        volume_spacing = image.spacing if image.spacing is not None else spacing
        if volume_spacing is None:
            raise ReIsoSegError(f"{image_file}: the file carries no voxel size; pass --spacing Z Y X")
        if tuple(reference.shape) != tuple(image.shape):
            raise ReIsoSegError(f"{reference_file}: shape {tuple(reference.shape)} differs from its image's "
                                f"{tuple(image.shape)}")
        pairs.append((name, image.read(), tuple(volume_spacing), reference.read().astype(np.uint32)))
    return pairs


def predicted_cases(model: ModelLoader, pairs: Sequence[tuple[str, np.ndarray, tuple, np.ndarray]], *,
                    tta: bool = False, step_size: float = 0.5, device: str | None = None) -> list[ValidationCase]:
    """Each validation pair (name, image, spacing, object ids) with the model's probabilities."""
    return [validation_case(model, name, image, spacing, reference, tta=tta, step_size=step_size, device=device)
            for name, image, spacing, reference in pairs]


def calibrate_model(model: ModelLoader, pairs: Sequence[tuple[str, np.ndarray, tuple, np.ndarray]],
                    base: InstanceSettings, *, grid: CalibrationGrid = CalibrationGrid(), tta: bool = False,
                    step_size: float = 0.5, device: str | None = None) -> Calibration:
    """Predict each validation pair once and calibrate on them."""
    return calibrate(predicted_cases(model, pairs, tta=tta, step_size=step_size, device=device), base, grid)
