"""Derived plans: nnU-Net v1's documented way to change patch or batch size is a plans file under a new identifier."""
from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Sequence

from reisoseg.errors import ReIsoSegError
from reisoseg.io.atomic import atomic_file

DEFAULT_PLANS = "nnUNetPlansv2.1"


def write_derived_plans(task_name: str, identifier: str, *, patch_size: Sequence[int], batch_size: int,
                        base_identifier: str = DEFAULT_PLANS) -> Path:
    """Copy the 3D plans of `task_name` with another patch and batch size; same preprocessed data."""
    folder = Path(os.environ["nnUNet_preprocessed"]) / task_name
    source = folder / f"{base_identifier}_plans_3D.pkl"
    if not source.is_file():
        raise ReIsoSegError(f"{source}: plans not found; run nnUNet_plan_and_preprocess first")
    with open(source, "rb") as handle:  # written by nnU-Net on this machine, not a downloaded model file
        plans = pickle.load(handle)
    for stage in plans["plans_per_stage"].values():
        stage["patch_size"] = [int(s) for s in patch_size]
        stage["batch_size"] = int(batch_size)
    target = folder / f"{identifier}_plans_3D.pkl"
    with atomic_file(target) as temporary, open(temporary, "wb") as handle:
        pickle.dump(plans, handle)
    return target
