"""`reisoseg.segment`: segment a volume of any size with memory bounded by the block size.

```python
import reisoseg

model = "results/nnUNet/3d_fullres/Task501_SynthEM/ReIsoSegTrainer__nnUNetPlansv2.1"
labels = reisoseg.segment(volume, spacing=(40, 5, 5), model=model, folds=["all"])   # numpy in, numpy out
reisoseg.segment("stack.h5:/raw", model=model, output="stack_seg.zarr")              # lazily read, OME-Zarr out
```

The blocks are Dask tasks: in-process by default (one worker per GPU, or one on CPU), or on an existing Dask
distributed cluster (`scheduler="tcp://host:8786"`). A run that stops for any reason continues where it stopped
when started again with the same arguments (see `reisoseg.inference.store`).
"""
from __future__ import annotations

import math
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reisoseg.errors import ReIsoSegError

DEFAULT_BLOCK = (128, 512, 512)


def _block_shape(values: Sequence[int], name: str = "block", minimum: int = 1) -> tuple[int, int, int]:
    block = tuple(int(v) for v in values)
    if len(block) != 3 or any(v < minimum for v in block):
        raise ReIsoSegError(f"{name} must be three integers >= {minimum} (z y x), got {list(block)}")
    return block  # type: ignore[return-value]


def _input(volume: Any, spacing: Sequence[float] | None) -> tuple[str, tuple, tuple, Any]:
    """(source name, shape, spacing, lazily sliceable data) of a path or an in-memory array."""
    from reisoseg.io.validation import resolve_spacing

    if isinstance(volume, np.ndarray):
        if volume.ndim != 3:
            raise ReIsoSegError(f"array input: expected a 3D (z, y, x) volume, got shape {volume.shape}")
        if spacing is None:
            raise ReIsoSegError("array input: give spacing=(z, y, x) in nm")
        source = f"memory:{id(volume)}"
        return source, volume.shape, resolve_spacing(source, None, spacing), volume
    from reisoseg.io.volume import open_volume

    opened = open_volume(volume)
    return opened.source, opened.shape, resolve_spacing(opened.source, opened.spacing, spacing), opened.data


def _progress(total: int, initial: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=description, unit="block", disable=not enabled, file=sys.stderr,
                dynamic_ncols=True)


def segment(volume: np.ndarray | str | os.PathLike, spacing: Sequence[float] | None = None,
            model: str | os.PathLike | None = None, output: str | os.PathLike | None = None, *,
            folds: Sequence[str] | None = None, checkpoint: str = "model_final_checkpoint",
            block: Sequence[int] = DEFAULT_BLOCK, step_size: float = 0.5, tta: bool = True,
            probabilities: bool = False, device: str | None = None, fp32: bool = False,
            scheduler: str | None = None, overwrite: bool = False, progress: bool = True,
            instances: bool = False, instance_halo: Sequence[int] | None = None) -> np.ndarray | Path:
    """Segment `volume` (a (z, y, x) array, or any path `reisoseg.io` reads) with a trained nnU-Net v1 model folder.

    Without `output` the labels come back as a numpy array; with `output` (`*.zarr`) they are written there as
    OME-Zarr labels (plus `probabilities`, float16, if asked) and the path is returned. `spacing` (nm, z y x) is
    needed when the input carries none; data at another spacing than the model's plans are resampled as nnU-Net
    does. `block` is the core each task predicts (input voxels; memory grows with it). `scheduler` is a Dask
    distributed address; by default blocks run in this process.

    `instances` (a model trained on an instance target): the labels are uint32 object ids, unique over the whole
    volume and the same as decoding the whole volume at once (`reisoseg.inference.instances`); the output also
    holds the semantic labels (`semantic`) and each object's score (attributes `reisoseg.scores`).
    `instance_halo` is the context (voxels, z y x) each block floods its objects with.
    """
    from reisoseg.inference import instances as blockwise_instances
    from reisoseg.inference.blocks import (
        BlockJob,
        Statistics,
        block_counts,
        block_indices,
        forget_array,
        register_array,
        volume_statistics,
        worker_device,
    )
    from reisoseg.inference.store import LABELS, PROBABILITIES, BlockStore, block_name
    from reisoseg.instances.target import model_instance_settings
    from reisoseg.io.volume import split_key
    from reisoseg.nnunet_v1.block_predictor import ModelReference, cached_predictor
    from reisoseg.nnunet_v1.prediction import checked_folds

    if model is None or not Path(model).is_dir():
        raise ReIsoSegError(f"{model}: no such model folder (RESULTS_FOLDER/nnUNet/3d_fullres/TaskXXX/"
                            f"TRAINER__PLANS)")
    block = _block_shape(block)
    if not 0 < step_size <= 1:
        raise ReIsoSegError(f"--step_size must lie in (0, 1], got {step_size}")
    source, shape, spacing, data = _input(volume, spacing)
    if shape[0] < 2:
        raise ReIsoSegError(f"{source}: a single section {tuple(shape)} is a 2D image; segment needs a 3D stack")
    if isinstance(volume, np.ndarray):
        if scheduler is not None:
            raise ReIsoSegError("an in-memory array cannot be sent to a Dask cluster: save it (zarr, HDF5) and "
                                "pass the path")
        register_array(source, data)
    scratch = None
    try:
        if output is None:
            scratch = tempfile.TemporaryDirectory(prefix="reisoseg_segment_")
            output = Path(scratch.name) / "segmentation.zarr"
        store = BlockStore(output)
        if not source.startswith("memory:") and Path(split_key(source)[0]).resolve() == store.target.resolve():
            raise ReIsoSegError(f"{store.target}: the output would replace the input; choose another name")
        folder = Path(model).resolve()
        parsed_folds = tuple(checked_folds(folder, folds, checkpoint))
        instance_settings = model_instance_settings(folder)
        if instances and instance_settings is None:
            raise ReIsoSegError(f"{folder}: this model was trained without an instance target, so it cannot decode "
                                f"objects; train on a task written by `reisoseg synth --instances` or `reisoseg "
                                f"convert --instances`")
        halo = _block_shape(instance_halo or blockwise_instances.DEFAULT_HALO, "instance_halo", minimum=0)
        source_path = source if source.startswith("memory:") else os.path.abspath(source)
        settings = {"input": source_path, "shape": list(shape), "spacing": list(spacing), "model": str(folder),
                    "folds": [str(f) for f in parsed_folds], "checkpoint": checkpoint, "block": list(block),
                    "step_size": step_size, "tta": tta, "probabilities": probabilities, "fp32": fp32,
                    **({"instances": True, "instance_halo": list(halo)} if instances else {})}
        recorded = store.open(settings, overwrite=overwrite)  # before the model loads: output errors come first
        reference = ModelReference(str(folder), parsed_folds, checkpoint, mixed_precision=not fp32)
        predictor = cached_predictor(reference, worker_device(device))
        if (folder / "postprocessing.json").is_file():
            print(f"note: {folder / 'postprocessing.json'} (connected-component postprocessing) is not applied "
                  f"blockwise", file=sys.stderr)
        if recorded is None:
            with _progress(math.prod(block_counts(shape, block)), 0, "statistics", progress) as bar:
                statistics = volume_statistics(data, source, block, nonzero_only=predictor.use_nonzero_mask,
                                               progress=bar.update)
            recorded = {"settings": settings, "statistics": asdict(statistics)}
            store.create(recorded, shape, block, predictor.num_classes, probabilities or instances,
                         blockwise_instances.ARRAYS if instances else None)
        job = BlockJob(source_path, reference, device, str(store.target), tuple(shape), tuple(spacing), block,
                       Statistics.from_record(recorded["statistics"]), step_size, tta, probabilities or instances,
                       labels_array=blockwise_instances.SEMANTIC if instances else LABELS,
                       instance_settings=instance_settings)
        every = block_indices(shape, block)
        finished = store.finished()
        if finished:
            print(f"resuming {store.target}: skipping {len(finished)} of {len(every)} finished blocks",
                  file=sys.stderr)

        def run_stage(function: Any, stage_job: Any, pending: list, description: str) -> None:
            with _progress(len(every), len(every) - len(pending), description, progress) as bar:
                started, voxels = time.perf_counter(), 0

                def advance(count: int) -> None:
                    nonlocal voxels
                    voxels += count
                    bar.set_postfix_str(f"{voxels / max(time.perf_counter() - started, 1e-9):.3g} voxels/s")
                    bar.update()

                if scheduler is None:
                    _run_local(function, stage_job, pending, advance, workers)
                else:
                    _run_distributed(function, stage_job, pending, advance, scheduler)

        from reisoseg.inference.blocks import run_block

        workers = _local_workers(device)
        run_stage(run_block, job, [i for i in every if block_name(i) not in finished], "segmenting")
        if instances:
            scores = blockwise_instances.decode_blockwise(
                blockwise_instances.InstanceJob(str(store.target), tuple(shape), block, tuple(spacing),
                                                instance_settings, halo), run_stage)
            written = store.complete(
                drop=blockwise_instances.INTERMEDIATE + (() if probabilities else (PROBABILITIES,)),
                attributes={"scores": {str(k): round(v, 6) for k, v in scores.items()}})
        else:
            written = store.complete()
        if scratch is not None:
            from reisoseg.io.volume import open_volume

            return open_volume(written).read()
        return written
    finally:
        forget_array(source)
        if scratch is not None:
            scratch.cleanup()


def _local_workers(device: str | None) -> int:
    """One worker per visible GPU, one on CPU (torch uses the cores)."""
    import torch

    return max(1, torch.cuda.device_count()) if device in (None, "cuda") and torch.cuda.is_available() else 1


def _run_local(function: Any, job: Any, pending: list, advance: Any, workers: int) -> None:
    """Dask's in-process threaded scheduler with `workers` threads."""
    import dask
    from dask.callbacks import Callback

    class Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if isinstance(result, int):
                advance(result)

    tasks = [dask.delayed(function, pure=False)(job, index) for index in pending]
    with Progress():
        dask.compute(*tasks, scheduler="threads", num_workers=workers)


def _run_distributed(function: Any, job: Any, pending: list, advance: Any, address: str) -> None:
    """Blocks as futures on an existing Dask distributed cluster; each worker loads the model once."""
    from distributed import Client, as_completed

    try:
        client = Client(address, timeout="20s")
    except OSError as error:
        raise ReIsoSegError(f"cannot reach the Dask scheduler at {address}: {error}") from None
    with client:
        futures = [client.submit(function, job, index, pure=False) for index in pending]
        for future in as_completed(futures):
            advance(future.result())
