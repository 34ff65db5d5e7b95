"""Derived plans: nnU-Net v1's documented way to change patch or batch size is a plans file under a new identifier."""
from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from reisoseg.errors import ReIsoSegError
from reisoseg.io.atomic import atomic_file
from reisoseg.layout import DEFAULT_PLANS, plans_file


def write_derived_plans(task_name: str, identifier: str, *, patch_size: Sequence[int] | None = None,
                        batch_size: int | None = None, base_identifier: str = DEFAULT_PLANS) -> Path:
    """Copy the 3D plans of `task_name` with another patch and/or batch size (None keeps the base plans'); same
    preprocessed data.

    The pooling and kernel sizes nnU-Net's Generic_UNet is built from are planned again for the new patch with the
    planner's own rule (`get_pool_and_conv_props`); ReIsoSeg's network ignores them. The patch itself is never
    rounded here: one that the planner would change is refused, so the only patch-fitting rule is the ReIsoSeg
    trainers' (`reisoseg.network.anisotropy.fit_patch_size`), and nnU-Net's trainers train the patch asked for.
    """
    from nnunet.experiment_planning.common_utils import get_pool_and_conv_props

    source = plans_file(os.environ["nnUNet_preprocessed"], task_name, base_identifier)
    if not source.is_file():
        raise ReIsoSegError(f"{source}: plans not found; run nnUNet_plan_and_preprocess first")
    with open(source, "rb") as handle:  # written by nnU-Net on this machine, not a downloaded model file
        plans = pickle.load(handle)
    if patch_size is not None and (len(patch_size) != 3 or min(patch_size) < 1):
        raise ReIsoSegError(f"`patch_size` must be three positive integers (z y x), got {list(patch_size)}")
    if batch_size is not None and batch_size < 1:
        raise ReIsoSegError(f"`batch_size` must be at least 1, got {batch_size}")
    for stage in plans["plans_per_stage"].values():
        requested = [int(s) for s in (stage["patch_size"] if patch_size is None else patch_size)]
        pools_per_axis, pools, kernels, patch, _ = get_pool_and_conv_props(stage["current_spacing"], requested, 4, 999)
        if [int(s) for s in patch] != requested:
            raise ReIsoSegError(f"`patch_size` {requested}: nnU-Net's planner needs {[int(s) for s in patch]} for "
                                f"spacing {[round(float(s), 3) for s in stage['current_spacing']]}; ask for that")
        stage.update(patch_size=np.array(patch), num_pool_per_axis=pools_per_axis, pool_op_kernel_sizes=pools,
                     conv_kernel_sizes=kernels, batch_size=int(stage["batch_size"] if batch_size is None
                                                               else batch_size))
    target = plans_file(os.environ["nnUNet_preprocessed"], task_name, identifier)
    with atomic_file(target) as temporary, open(temporary, "wb") as handle:
        pickle.dump(plans, handle)
    return target


def plan_and_preprocess(task_id: int, processes: int = 1) -> None:
    """nnU-Net v1's own `nnUNet_plan_and_preprocess -t ID --verify_dataset_integrity`, in a subprocess."""
    command = [sys.executable, "-m", "nnunet.experiment_planning.nnUNet_plan_and_preprocess", "-t", str(task_id),
               "--verify_dataset_integrity", "-tl", str(processes), "-tf", str(processes)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:]
        raise ReIsoSegError(f"nnUNet_plan_and_preprocess failed: {tail[0] if tail else result.returncode}")
