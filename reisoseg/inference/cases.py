"""EM volumes predicted through an engine's case-folder predictor, and the objects written beside its outputs.

Both engines predict folders of nnU-Net cases (CASE_0000.nii.gz). `read_em_volumes` reads and checks EM volumes in
any `reisoseg.io` format; `predict_volumes` turns them into such cases in a scratch folder, lets the engine's
`predict_cases(cases_in, cases_out)` predict them, and writes each result in the input's format with its spacing.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from reisoseg.errors import ReIsoSegError
from reisoseg.inference.model import ModelLoader
from reisoseg.instances.decode import decode_instances
from reisoseg.instances.scores import read_scores, write_scores
from reisoseg.instances.target import InstanceSettings
from reisoseg.io.atomic import atomic_file
from reisoseg.io.base import HDF5_SUFFIXES, NIFTI_SUFFIXES, TIFF_SUFFIXES
from reisoseg.io.nifti import read_nifti, write_nifti
from reisoseg.io.validation import check_image, resolve_spacing
from reisoseg.io.volume import open_volume, split_key, volume_stem, write_volume
from reisoseg.layout import CASE_SUFFIX, INSTANCES_SUBFOLDER, case_names

OUTPUT_SUFFIXES = {"tiff": ".tif", "sections": ".tif", "hdf5": ".h5", "zarr": ".zarr", "nifti": ".nii.gz"}
CasePredictor = Callable[[Path, Path], object]  # (folder of cases, output folder) -> anything


def write_objects(target: Path, probabilities: np.ndarray, spacing: Sequence[float],
                  settings: InstanceSettings) -> None:
    """Decode the objects of one case's probabilities into `target` (uint32 NIfTI) with their scores beside it."""
    objects, scores = decode_instances(probabilities, spacing, settings)
    with atomic_file(target) as temporary:
        write_nifti(temporary, objects, spacing)
    write_scores(target, scores)


def blockwise_case_predictor(model: ModelLoader, *, instances: bool = False, **options: Any) -> CasePredictor:
    """A `CasePredictor` that segments each case with `model` block by block (`reisoseg.inference.segment`, with
    `options` such as `tta`, `step_size`, `device`, `decoding`), for models that no engine predicts, such as a
    BioImage.IO package."""
    import zarr

    from reisoseg.inference.instances import SEMANTIC
    from reisoseg.inference.segment import segment

    def predict_cases(cases_in: str | os.PathLike, cases_out: str | os.PathLike) -> Path:
        cases_in, cases_out = Path(cases_in), Path(cases_out)
        cases_out.mkdir(parents=True, exist_ok=True)
        for case in case_names(cases_in):
            image, spacing = read_nifti(cases_in / f"{case}{CASE_SUFFIX}")
            check_image(str(cases_in / f"{case}{CASE_SUFFIX}"), image)
            with tempfile.TemporaryDirectory(prefix="reisoseg_case_") as scratch:
                written = segment(image, spacing, model, Path(scratch) / "case.zarr", instances=instances, **options)
                labels = open_volume(written).read()
                semantic = zarr.open_array(str(written / SEMANTIC), mode="r")[:] if instances else labels
                if instances:
                    target = cases_out / INSTANCES_SUBFOLDER / f"{case}.nii.gz"
                    with atomic_file(target) as temporary:
                        write_nifti(temporary, labels.astype(np.uint32), spacing)
                    write_scores(target, read_scores(written) or {})
            with atomic_file(cases_out / f"{case}.nii.gz") as temporary:
                write_nifti(temporary, semantic.astype(np.uint8), spacing)
        return cases_out

    return predict_cases


def em_inputs(path: Path) -> list[Path]:
    """One volume (file, zarr or a folder of sections) or every volume in a folder of volumes."""
    if not Path(split_key(path)[0]).exists():
        raise ReIsoSegError(f"{path}: no such file or folder")
    if not path.is_dir() or path.suffix == ".zarr":
        return [path]
    volumes = [p for p in sorted(path.iterdir()) if p.suffix == ".zarr" or p.name.lower().endswith(
        (*HDF5_SUFFIXES, *NIFTI_SUFFIXES))]
    tiffs = [p for p in sorted(path.iterdir()) if p.name.lower().endswith(TIFF_SUFFIXES)]
    if tiffs and not volumes:
        import tifffile

        with tifffile.TiffFile(tiffs[0]) as handle:
            if len(handle.pages) == 1:
                return [path]  # a folder of sections is one volume
    return volumes + tiffs


def _output_path(output: Path, source: Path, kind: str, several: bool) -> Path:
    if not several and output.name.lower().endswith(tuple(OUTPUT_SUFFIXES.values())):
        return output
    return output / f"{volume_stem(source)}_segmentation{OUTPUT_SUFFIXES[kind]}"


@dataclass(frozen=True)
class EMVolume:
    """An EM volume read and checked, with the path its segmentation goes to."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    target: Path


def read_em_volumes(input_path: str | os.PathLike, output: str | os.PathLike, *,
                    spacing: Sequence[float] | None = None, output_format: str | None = None) -> list[EMVolume]:
    """Every volume of `input_path` in any `reisoseg.io` format, read and checked before anything is predicted or
    written; each goes to the input's format (a folder of sections gives a multipage TIFF, zarr gives OME-Zarr
    labels) unless `output_format` names another."""
    sources = em_inputs(Path(input_path))
    if not sources:
        raise ReIsoSegError(f"{input_path}: no volumes found")
    volumes = []
    for source in sources:
        volume = open_volume(source)
        data = volume.read()
        check_image(volume.source, data)
        target = _output_path(Path(output), source, output_format or volume.format, len(sources) > 1)
        volumes.append(EMVolume(data, resolve_spacing(volume.source, volume.spacing, spacing), target))
    return volumes


def predict_volumes(volumes: Sequence[EMVolume], predict_cases: CasePredictor, *,
                    instances: bool = False) -> list[Path]:
    """Segment `volumes` as nnU-Net cases with `predict_cases`, and write each result (with `instances`, the objects
    that `predict_cases` wrote to OUT/instances/CASE.nii.gz too) in its format, with its spacing."""
    written = []
    with tempfile.TemporaryDirectory(prefix="reisoseg_predict_") as scratch:
        cases_in, cases_out = Path(scratch) / "in", Path(scratch) / "out"
        cases_in.mkdir()
        for index, volume in enumerate(volumes):
            write_nifti(cases_in / f"case{index:04d}{CASE_SUFFIX}", volume.data, volume.spacing)
        predict_cases(cases_in, cases_out)
        for index, volume in enumerate(volumes):
            segmentation, _ = read_nifti(cases_out / f"case{index:04d}.nii.gz")
            volume.target.parent.mkdir(parents=True, exist_ok=True)
            write_volume(volume.target, segmentation.astype(np.uint8), volume.spacing, key="segmentation",
                         labels=True)
            written.append(volume.target)
            if instances:
                written.append(_write_instances_beside(volume.target, cases_out / INSTANCES_SUBFOLDER /
                                                       f"case{index:04d}.nii.gz", volume.spacing))
    return written


def _write_instances_beside(semantic: Path, decoded: Path, spacing: Sequence[float]) -> Path:
    """`<semantic stem>_instances<suffix>` in the semantic output's format, and its scores beside it."""
    target = semantic.with_name(f"{volume_stem(semantic)}_instances{semantic.name[len(volume_stem(semantic)):]}")
    objects, _ = read_nifti(decoded)
    write_volume(target, objects.astype(np.uint32), spacing, key="instances", labels=True)
    write_scores(target, read_scores(decoded) or {})
    return target
