"""Write an nnU-Net raw task (imagesTr, labelsTr, imagesTs, labelsTs, dataset.json) in v1's layout or v2's; no
nnunet import needed. The volumes are the same for both engines: only the folder and dataset.json differ."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from reisoseg.errors import ReIsoSegError
from reisoseg.io.atomic import atomic_directory
from reisoseg.io.nifti import write_nifti
from reisoseg.layout import IGNORE_LABEL_NAME, INSTANCES_KEY


@dataclass
class Case:
    """One volume of a task: (z, y, x) image and optional labels with (z, y, x) spacing in nm."""

    name: str
    image: np.ndarray
    labels: np.ndarray | None
    spacing: Sequence[float]
    instances: np.ndarray | None = None  # object ids of the instance class, where known


ENGINES = ("v1", "v2")
RAW_VARIABLES = {"v1": "nnUNet_raw_data_base", "v2": "nnUNet_raw"}  # where each engine reads its raw tasks


def is_nnunet_folder(path: str | os.PathLike) -> bool:
    """A folder in nnU-Net's naming (CASE_0000.nii.gz ...), as opposed to EM volumes or sections."""
    return Path(path).is_dir() and any(Path(path).glob("*_0000.nii.gz"))


def task_folder_name(task_id: int, name: str, engine: str = "v1") -> str:
    """`TaskXXX_Name` (v1) or `DatasetXXX_Name` (v2)."""
    if not 1 <= int(task_id) <= 999:
        raise ValueError(f"task id must be 1-999, got {task_id}")
    return f"{'Dataset' if engine == 'v2' else 'Task'}{int(task_id):03d}_{name}"


def task_folder(raw: str | os.PathLike, task_id: int, name: str, engine: str = "v1") -> Path:
    """Where `engine` finds the task under its raw folder (v1: $nnUNet_raw_data_base/nnUNet_raw_data, v2:
    $nnUNet_raw)."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    parent = Path(raw) if engine == "v2" else Path(raw) / "nnUNet_raw_data"
    return parent / task_folder_name(task_id, name, engine)


def ignore_label(labels: Mapping[str, str], source: str) -> int | None:
    """The value named `ignore` in dataset.json's labels, which must be the highest; None without one."""
    named = [int(value) for value, name in labels.items() if name == IGNORE_LABEL_NAME]
    if not named:
        return None
    if named[0] != max(int(value) for value in labels):
        raise ReIsoSegError(f"{source}: the label {IGNORE_LABEL_NAME!r} must have the highest value, got {named[0]}")
    return named[0]


def write_task(raw_data_base: str | os.PathLike, task_id: int, name: str, training: Sequence[Case],
               test: Sequence[Case], labels: Mapping[int, str], *, modality: str = "EM",
               description: str = "", overwrite: bool = False, instance_class: int | None = None,
               engine: str = "v1") -> Path:
    """Write the task where `engine` reads it (`task_folder`) atomically and return its path.

    Test cases with labels also get `labelsTs/` (ignored by nnU-Net, used by `reisoseg evaluate`). With
    `instance_class`, training labels carry the instance target of that class (`reisoseg.instances.target`: a
    boundary class is added), dataset.json records its settings, training cases get their object ids in
    `instancesTr/` (for calibrating the decoding on held-out folds) and labelled test cases in `instancesTs/`.
    Cases without `instances` get the 3D connected components of the class, with a warning.
    """
    target = task_folder(raw_data_base, task_id, name, engine)
    label_names = {"0": "background", **{str(k): v for k, v in sorted(labels.items()) if int(k) != 0}}
    instances_record = None
    if instance_class is not None:
        training, test, label_names, instances_record = _with_instance_target(training, test, label_names,
                                                                              instance_class)
    with atomic_directory(target, overwrite=overwrite) as folder:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs") + (("instancesTr", "instancesTs")
                                                                       if instances_record else ()):
            (folder / sub).mkdir()
        for case in training:
            write_nifti(folder / "imagesTr" / f"{case.name}_0000.nii.gz", case.image, case.spacing)
            write_nifti(folder / "labelsTr" / f"{case.name}.nii.gz", case.labels.astype(np.uint8), case.spacing)
            if instances_record:  # the objects of held-out folds, for calibrating the decoding on them
                write_nifti(folder / "instancesTr" / f"{case.name}.nii.gz", case.instances.astype(np.uint32),
                            case.spacing)
        for case in test:
            write_nifti(folder / "imagesTs" / f"{case.name}_0000.nii.gz", case.image, case.spacing)
            if case.labels is not None:
                write_nifti(folder / "labelsTs" / f"{case.name}.nii.gz", case.labels.astype(np.uint8), case.spacing)
            if case.instances is not None and instances_record:
                write_nifti(folder / "instancesTs" / f"{case.name}.nii.gz", case.instances.astype(np.uint32),
                            case.spacing)
        dataset = _dataset_json(engine, name, description, modality, label_names, training, test)
        if instances_record:
            dataset[INSTANCES_KEY] = instances_record
        (folder / "dataset.json").write_text(json.dumps(dataset, indent=2))
    return target


def _dataset_json(engine: str, name: str, description: str, modality: str, label_names: Mapping[str, str],
                  training: Sequence[Case], test: Sequence[Case]) -> dict:
    """v1's dataset.json (modality, labels value -> name, case lists) or v2's (channel names, labels name -> value,
    file ending; the label named `ignore`, the highest, is v2's own ignore label)."""
    if engine == "v2":
        return {"name": name, "description": description, "channel_names": {"0": modality},
                "labels": {label: int(value) for value, label in label_names.items()},
                "numTraining": len(training), "file_ending": ".nii.gz"}
    return {
        "name": name,
        "description": description,
        "tensorImageSize": "3D",
        "reference": "",
        "licence": "",
        "release": "",
        "modality": {"0": modality},
        "labels": dict(label_names),
        "numTraining": len(training),
        "numTest": len(test),
        "training": [{"image": f"./imagesTr/{c.name}.nii.gz", "label": f"./labelsTr/{c.name}.nii.gz"}
                     for c in training],
        "test": [f"./imagesTs/{c.name}.nii.gz" for c in test],
    }


def _with_instance_target(training: Sequence[Case], test: Sequence[Case], label_names: dict[str, str],
                          instance_class: int) -> tuple[list[Case], list[Case], dict[str, str], dict]:
    """Training labels with the object class split into interior and a new boundary class; test cases keep their
    semantic labels and gain object ids."""
    from reisoseg.evaluation.instances import connected_instances
    from reisoseg.instances.target import instance_target, object_volumes_nm3, training_settings

    if str(instance_class) not in label_names:
        raise ValueError(f"instance class {instance_class} is not one of the labels {label_names}")
    boundary_class = max(int(k) for k in label_names) + 1

    semantic_only = [c.name for c in [*training, *test] if c.labels is not None and c.instances is None]
    if semantic_only:
        print(f"reisoseg: warning: {len(semantic_only)} case(s) ({', '.join(semantic_only[:3])}"
              f"{', ...' if len(semantic_only) > 3 else ''}) have no object ids: their objects are the 3D connected "
              f"components of {label_names[str(instance_class)]}, so touching objects stay merged", file=sys.stderr)

    def objects(case: Case) -> np.ndarray:
        if case.instances is not None:
            return np.where(case.labels == instance_class, case.instances, 0)
        return connected_instances(case.labels == instance_class)  # the objects `evaluate` finds in such labels

    volumes, new_training, new_test = [], [], []
    for case in training:
        ids = objects(case)
        volumes.extend(object_volumes_nm3(ids, case.spacing))
        target = instance_target(ids, case.spacing, interior=instance_class, boundary=boundary_class)
        labels = np.where(target > 0, target, np.where(case.labels == instance_class, 0, case.labels))
        new_training.append(Case(case.name, case.image, labels.astype(np.uint8), case.spacing, ids))
    for case in test:
        ids = objects(case) if case.labels is not None else None
        new_test.append(Case(case.name, case.image, case.labels, case.spacing, ids))
    names = {**label_names, str(boundary_class): f"{label_names[str(instance_class)]}_boundary"}
    record = training_settings(volumes, training[0].spacing, instance_class=instance_class,
                               boundary_class=boundary_class)
    return new_training, new_test, names, record
