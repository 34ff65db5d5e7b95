"""A ready nnU-Net raw task (v1 or v2 layout) made of synthetic volumes."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from reisoseg.console import progress_bar
from reisoseg.io.nnunet_task import Case, write_task
from reisoseg.synthetic.generator import CLASSES, SynthParams, generate_volume


def select_classes(labels: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Keep the named classes, renumbered 1..k in the given order; everything else becomes background."""
    out = np.zeros_like(labels)
    for new_value, name in enumerate(classes, start=1):
        out[labels == CLASSES[name]] = new_value
    return out


def volume_seed(task_seed: int, index: int) -> int:
    """The generator seed of a synthetic task's `index`-th volume (training volumes first, then test), so that
    anyone can regenerate one volume of a task without writing the task."""
    return task_seed * 1000 + index


def make_synthetic_task(raw_data_base: str | os.PathLike, task_id: int, name: str = "SynthEM", *,
                        num_training: int = 6, num_test: int = 2, shape: Sequence[int] = (32, 192, 192),
                        ratio: int = 8, seed: int = 0, classes: Sequence[str] = ("mitochondria",),
                        params: SynthParams = SynthParams(), overwrite: bool = False,
                        progress: bool = True, instances: bool = False, engine: str = "v1") -> Path:
    """Generate `num_training + num_test` volumes (seeds derived from `seed`) and write them as a task of
    `engine` (reisoseg.io.nnunet_task.ENGINES).

    `instances`: train on the instance target of mitochondria (interior / boundary, from the generator's object
    ids) and write the test volumes' object ids to instancesTs/.
    """
    unknown = [c for c in classes if c not in CLASSES]
    if unknown or not classes:
        raise ValueError(f"classes must be a non-empty subset of {list(CLASSES)}, got {list(classes)}")
    cases = []
    names = [f"synth_{i:03d}" for i in range(num_training + num_test)]
    with progress_bar(len(names), "generating volumes", "volume", enabled=progress) as bar:
        for index, case_name in enumerate(names):
            volume = generate_volume(tuple(shape), ratio, seed=volume_seed(seed, index), params=params)
            cases.append(Case(case_name, volume.image, select_classes(volume.labels, classes), volume.spacing,
                              volume.instances))
            bar.update()
    labels = {i: c for i, c in enumerate(classes, start=1)}
    description = (f"reisoseg synthetic EM: {num_training}+{num_test} volumes of {list(shape)} voxels, ratio {ratio}, "
                   f"seed {seed}")
    if instances and "mitochondria" not in classes:
        raise ValueError("instances=True needs the mitochondria class: only mitochondria have object ids")
    return write_task(raw_data_base, task_id, name, cases[:num_training], cases[num_training:], labels,
                      description=description, overwrite=overwrite, engine=engine,
                      instance_class=list(classes).index("mitochondria") + 1 if instances else None)
