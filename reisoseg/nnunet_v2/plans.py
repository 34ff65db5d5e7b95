"""v2 plans derived for another patch and/or batch size: the same preprocessed data, their own plans name (hence
their own model folder), as `reisoseg train --patch_size/--batch_size` does on v1."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from nnunetv2.experiment_planning.experiment_planners.network_topology import get_pool_and_conv_props

from reisoseg.errors import ReIsoSegError
from reisoseg.io.atomic import atomic_file

MIN_FEATURE_MAP_EDGE = 4  # v2's ExperimentPlanner: the coarsest feature map keeps at least this many voxels per axis


def write_derived_plans(dataset_folder: Path, base_identifier: str, identifier: str, configuration: str, *,
                        patch_size: Sequence[int] | None = None, batch_size: int | None = None) -> Path:
    """Copy `base_identifier`'s plans as `identifier`, with `configuration`'s patch and/or batch size replaced.

    The U-Net topology that v2's baseline network is built from (stages, strides, kernels, features, convolutions
    per stage) is planned again for the new patch with v2's own rule (`get_pool_and_conv_props`); ReIsoSeg's network
    ignores it. A patch that the rule would change is refused rather than rounded, so the only patch-fitting rule is
    the ReIsoSeg trainers' own.
    """
    source = dataset_folder / f"{base_identifier}.json"
    if not source.is_file():
        raise ReIsoSegError(f"{source}: plans not found; run nnUNetv2_plan_and_preprocess first")
    if patch_size is not None and (len(patch_size) != 3 or min(patch_size) < 1):
        raise ReIsoSegError(f"`patch_size` must be three positive integers (z y x), got {list(patch_size)}")
    if batch_size is not None and batch_size < 1:
        raise ReIsoSegError(f"`batch_size` must be at least 1, got {batch_size}")
    plans = json.loads(source.read_text())
    settings = plans["configurations"].get(configuration)
    if settings is None or "patch_size" not in settings:
        raise ReIsoSegError(f"{source}: no configuration {configuration!r} with a patch of its own to derive from")
    requested = [int(s) for s in (settings["patch_size"] if patch_size is None else patch_size)]
    _, strides, kernels, patch, _ = get_pool_and_conv_props(settings["spacing"], requested, MIN_FEATURE_MAP_EDGE,
                                                            999999)
    if [int(s) for s in patch] != requested:
        raise ReIsoSegError(f"`patch_size` {requested}: nnU-Net v2's planner needs {[int(s) for s in patch]} for "
                            f"spacing {[round(float(s), 3) for s in settings['spacing']]}; ask for that")
    architecture = settings["architecture"]["arch_kwargs"]
    stages = len(strides)
    widest = max(architecture["features_per_stage"])
    base_features = architecture["features_per_stage"][0]

    def per_stage(values: Sequence[int], count: int) -> list[int]:  # the planned list, cut or extended by its last
        return [int(v) for v in list(values)[:count]] + [int(values[-1])] * max(0, count - len(values))

    architecture.update(n_stages=stages, strides=strides, kernel_sizes=kernels,
                        features_per_stage=[min(widest, base_features * 2 ** i) for i in range(stages)],
                        n_conv_per_stage=per_stage(architecture["n_conv_per_stage"], stages),
                        n_conv_per_stage_decoder=per_stage(architecture["n_conv_per_stage_decoder"], stages - 1))
    settings.update(patch_size=requested, batch_size=int(settings["batch_size"] if batch_size is None else batch_size))
    plans["plans_name"] = identifier
    target = dataset_folder / f"{identifier}.json"
    with atomic_file(target) as temporary:
        temporary.write_text(json.dumps(plans, indent=1))
    return target
