"""Write an nnU-Net v1 raw task (imagesTr, labelsTr, imagesTs, labelsTs, dataset.json); no nnunet import needed."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from reisoseg.io.atomic import atomic_directory
from reisoseg.io.nifti import write_nifti


@dataclass
class Case:
    """One volume of a task: (z, y, x) image and optional labels with (z, y, x) spacing in nm."""

    name: str
    image: np.ndarray
    labels: np.ndarray | None
    spacing: Sequence[float]


def task_folder_name(task_id: int, name: str) -> str:
    if not 1 <= int(task_id) <= 999:
        raise ValueError(f"task id must be 1-999, got {task_id}")
    return f"Task{int(task_id):03d}_{name}"


def write_task(raw_data_base: str | os.PathLike, task_id: int, name: str, training: Sequence[Case],
               test: Sequence[Case], labels: Mapping[int, str], *, modality: str = "EM",
               description: str = "", overwrite: bool = False) -> Path:
    """Write `<raw_data_base>/nnUNet_raw_data/TaskXXX_Name` atomically and return its path.

    Test cases with labels also get `labelsTs/` (ignored by nnU-Net, used by `reisoseg evaluate`).
    """
    target = Path(raw_data_base) / "nnUNet_raw_data" / task_folder_name(task_id, name)
    label_names = {"0": "background", **{str(k): v for k, v in sorted(labels.items()) if int(k) != 0}}
    with atomic_directory(target, overwrite=overwrite) as folder:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (folder / sub).mkdir()
        for case in training:
            write_nifti(folder / "imagesTr" / f"{case.name}_0000.nii.gz", case.image, case.spacing)
            write_nifti(folder / "labelsTr" / f"{case.name}.nii.gz", case.labels.astype(np.uint8), case.spacing)
        for case in test:
            write_nifti(folder / "imagesTs" / f"{case.name}_0000.nii.gz", case.image, case.spacing)
            if case.labels is not None:
                write_nifti(folder / "labelsTs" / f"{case.name}.nii.gz", case.labels.astype(np.uint8), case.spacing)
        dataset = {
            "name": name,
            "description": description,
            "tensorImageSize": "3D",
            "reference": "",
            "licence": "",
            "release": "",
            "modality": {"0": modality},
            "labels": label_names,
            "numTraining": len(training),
            "numTest": len(test),
            "training": [{"image": f"./imagesTr/{c.name}.nii.gz", "label": f"./labelsTr/{c.name}.nii.gz"}
                         for c in training],
            "test": [f"./imagesTs/{c.name}.nii.gz" for c in test],
        }
        (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return target
