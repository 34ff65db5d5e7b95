"""`reisoseg.segment`: segment a volume of any size with memory bounded by the block size.

```python
import reisoseg

model = "results/nnUNet/3d_fullres/Task501_SynthEM/ReIsoSegTrainer__nnUNetPlansv2.1"
labels = reisoseg.segment(volume, spacing=(40, 5, 5), model=model, folds=["all"])   # numpy in, numpy out
reisoseg.segment("stack.h5:/raw", model=model, output="stack_seg.zarr")              # lazily read, OME-Zarr out
```

`reisoseg.segment` takes an nnU-Net v1 model folder; this module takes any `reisoseg.inference.model.ModelLoader`
(an nnU-Net v1 folder becomes one through `reisoseg.nnunet_v1.block_predictor.NnunetV1Model`).

The blocks are Dask tasks: in-process by default (one worker per GPU, or one on CPU), or on an existing Dask
distributed cluster (`scheduler="tcp://host:8786"`). A run that stops for any reason continues where it stopped
when started again with the same arguments (see `reisoseg.inference.store`).
"""
from __future__ import annotations

import hashlib
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from reisoseg.console import progress_bar
from reisoseg.errors import ReIsoSegError
from reisoseg.inference.model import ModelLoader

DEFAULT_BLOCK = (128, 512, 512)


class SegmentationCancelled(ReIsoSegError):
    """`run` stopped between blocks because its `should_stop` said so; the output stays resumable."""

    label = "cancelled"


def array_identity(volume: np.ndarray) -> str:
    """The name of an in-memory volume in a run's record: a digest of its contents, so that a run on the same array
    resumes like a run on the same file."""
    digest = hashlib.blake2b(np.ascontiguousarray(volume).data, digest_size=12)
    digest.update(f"{volume.dtype.str}{volume.shape}".encode())
    return f"memory:{digest.hexdigest()}"


def _block_shape(values: Sequence[int], name: str = "block", minimum: int = 1) -> tuple[int, int, int]:
    block = tuple(int(v) for v in values)
    if len(block) != 3 or any(v < minimum for v in block):
        raise ReIsoSegError(f"`{name}` must be three integers >= {minimum} (z y x), got {list(block)}")
    return block  # type: ignore[return-value]


def _input(volume: Any, spacing: Sequence[float] | None) -> tuple[str, tuple, tuple, Any]:
    """(source name, shape, spacing, lazily sliceable data) of a path or an in-memory array."""
    from reisoseg.io.validation import resolve_spacing

    if isinstance(volume, np.ndarray):
        if volume.ndim != 3:
            raise ReIsoSegError(f"array input: expected a 3D (z, y, x) volume, got shape {volume.shape}")
        if spacing is None:
            raise ReIsoSegError("array input: give spacing=(z, y, x) in nm")
        source = array_identity(volume)
        return source, volume.shape, resolve_spacing(source, None, spacing), volume
    from reisoseg.io.volume import open_volume

    opened = open_volume(volume)
    return opened.source, opened.shape, resolve_spacing(opened.source, opened.spacing, spacing), opened.data


@dataclass
class SegmentationRun:
    """A prepared run: where it writes, the job every block shares, and what is left to do."""

    store: Any  # reisoseg.inference.store.BlockStore
    job: Any  # reisoseg.inference.blocks.BlockJob
    blocks: list
    pending: list
    instance_job: Any  # reisoseg.inference.instances.InstanceJob, or None for semantic labels
    scheduler: str | None
    progress: bool
    keep_probabilities: bool
    source: str
    scratch: tempfile.TemporaryDirectory | None

    def close(self) -> None:
        """Forget the in-memory input and remove a temporary output."""
        from reisoseg.inference.blocks import forget_array

        forget_array(self.source)
        if self.scratch is not None:
            self.scratch.cleanup()


def prepare(volume: np.ndarray | str | os.PathLike, spacing: Sequence[float] | None, model: ModelLoader,
            output: str | os.PathLike | None = None, *, block: Sequence[int] = DEFAULT_BLOCK,
            step_size: float = 0.5, tta: bool = True, probabilities: bool = False, device: str | None = None,
            scheduler: str | None = None, overwrite: bool = False, progress: bool = True, instances: bool = False,
            instance_halo: Sequence[int] | None = None, decoding: Mapping[str, float] | None = None) -> SegmentationRun:
    """Check the arguments, open (or resume) the output and gather the whole-volume statistics (a streamed pass)."""
    from reisoseg.inference import instances as blockwise_instances
    from reisoseg.inference.blocks import BlockJob, forget_array, register_array
    from reisoseg.inference.statistics import Statistics, volume_statistics
    from reisoseg.inference.store import LABELS, BlockStore, block_name
    from reisoseg.inference.tiles import block_counts, block_indices
    from reisoseg.io.volume import split_key

    if not isinstance(model, ModelLoader):
        raise ReIsoSegError(f"model: expected a trained model folder or a reisoseg.inference.model.ModelLoader, got "
                            f"{type(model).__name__}")
    from reisoseg.devices import resolve_device

    device_type = resolve_device(device).type  # once per run, before a model loads
    block = _block_shape(block)
    if not 0 < step_size <= 1:
        raise ReIsoSegError(f"`step_size` must lie in (0, 1], got {step_size}")
    source, shape, spacing, data = _input(volume, spacing)
    if shape[0] < 2:
        raise ReIsoSegError(f"{source}: a single section {tuple(shape)} is a 2D image; segment needs a 3D stack")
    if isinstance(volume, np.ndarray) and scheduler is not None:
        raise ReIsoSegError("an in-memory array cannot be sent to a Dask cluster: save it (zarr, HDF5) and pass the "
                            "path")
    instance_settings = model.instance_settings
    if instance_settings is not None:
        instance_settings = replace(instance_settings, **(decoding or {}))
    if instances and instance_settings is None:
        raise ReIsoSegError(f"{model.settings().get('model', 'the model')}: this model was trained without an "
                            f"instance target, so it cannot decode objects; train on a task written by `reisoseg "
                            f"synth --instances` or `reisoseg convert --instances`")
    halo = _block_shape(instance_halo or blockwise_instances.DEFAULT_HALO, "instance_halo", minimum=0)
    scratch = tempfile.TemporaryDirectory(prefix="reisoseg_segment_") if output is None else None
    if isinstance(volume, np.ndarray):
        register_array(source, data)
    prepared = None
    try:
        store = BlockStore(output if scratch is None else Path(scratch.name) / "segmentation.zarr")
        if not source.startswith("memory:") and Path(split_key(source)[0]).resolve() == store.target.resolve():
            raise ReIsoSegError(f"{store.target}: the output would replace the input; choose another name")
        source_path = source if source.startswith("memory:") else os.path.abspath(source)
        settings = {"input": source_path, "shape": list(shape), "spacing": list(spacing), **model.settings(),
                    "block": list(block), "step_size": step_size, "tta": tta, "probabilities": probabilities,
                    **({"instances": True, "instance_halo": list(halo), "decoding": instance_settings.to_dict()}
                       if instances else {})}
        recorded = store.open(settings, overwrite=overwrite)
        if recorded is None:
            with progress_bar(math.prod(block_counts(shape, block)), "statistics", "block", enabled=progress) as bar:
                statistics = volume_statistics(data, source, block, nonzero_only=model.use_nonzero_mask,
                                               progress=bar.update)
            recorded = {"settings": settings, "statistics": asdict(statistics)}
            store.create(recorded, shape, block, model.num_classes, probabilities or instances,
                         blockwise_instances.ARRAYS if instances else None)
        job = BlockJob(source_path, model, device_type, str(store.target), tuple(shape), tuple(spacing), block,
                       Statistics.from_record(recorded["statistics"]), step_size, tta, probabilities or instances,
                       labels_array=blockwise_instances.SEMANTIC if instances else LABELS,
                       instance_settings=instance_settings)
        instance_job = blockwise_instances.InstanceJob(str(store.target), tuple(shape), block, tuple(spacing),
                                                       instance_settings, halo) if instances else None
        every = block_indices(shape, block)
        finished = store.finished()
        if finished:
            print(f"resuming {store.target}: skipping {len(finished)} of {len(every)} finished blocks",
                  file=sys.stderr)
        prepared = SegmentationRun(store, job, every, [i for i in every if block_name(i) not in finished],
                                   instance_job, scheduler, progress, probabilities, source, scratch)
        return prepared
    finally:
        if prepared is None:  # failed: leave nothing behind
            forget_array(source)
            if scratch is not None:
                scratch.cleanup()


def run(prepared: SegmentationRun, *, bar: Callable[..., Any] = progress_bar,
        should_stop: Callable[[], bool] | None = None) -> dict[int, float] | None:
    """Predict the pending blocks (Dask tasks), then decode objects if asked; returns the objects' scores.

    `bar(total, description, unit, enabled=, initial=)` makes each stage's progress bar (tqdm's interface; a GUI
    passes its own). `should_stop`, asked after every block, ends the run with `SegmentationCancelled`: finished
    blocks are kept, and the same call continues from them."""
    from reisoseg.inference import instances as blockwise_instances
    from reisoseg.inference.blocks import run_block

    workers = _local_workers(prepared.job.device)

    def check_stop() -> None:
        if should_stop is not None and should_stop():
            raise SegmentationCancelled(f"{prepared.store.partial}: cancelled; run it again with the same settings "
                                        f"to continue")

    def run_stage(function: Any, stage_job: Any, pending: list, description: str) -> None:
        check_stop()
        with bar(len(prepared.blocks), description, "block", enabled=prepared.progress,
                 initial=len(prepared.blocks) - len(pending)) as stage_bar:
            started, voxels = time.perf_counter(), 0

            def advance(count: int) -> None:
                nonlocal voxels
                voxels += count
                stage_bar.set_postfix_str(f"{voxels / max(time.perf_counter() - started, 1e-9):.3g} voxels/s")
                stage_bar.update()
                check_stop()

            if prepared.scheduler is None:
                _run_local(function, stage_job, pending, advance, workers)
            else:
                _run_distributed(function, stage_job, pending, advance, prepared.scheduler)

    run_stage(run_block, prepared.job, prepared.pending, "segmenting")
    if prepared.instance_job is None:
        return None
    return blockwise_instances.decode_blockwise(prepared.instance_job, run_stage)


def finish(prepared: SegmentationRun, scores: dict[int, float] | None) -> np.ndarray | Path:
    """Complete the output (rename it into place) and return its path, or the labels when no output was named."""
    from reisoseg.inference import instances as blockwise_instances
    from reisoseg.inference.store import PROBABILITIES

    if scores is None:
        written = prepared.store.complete()
    else:
        written = prepared.store.complete(
            drop=blockwise_instances.INTERMEDIATE + (() if prepared.keep_probabilities else (PROBABILITIES,)),
            attributes={"scores": {str(k): round(v, 6) for k, v in scores.items()}})
    if prepared.scratch is None:
        return written
    from reisoseg.io.volume import open_volume

    return open_volume(written).read()


def segment(volume: np.ndarray | str | os.PathLike, spacing: Sequence[float] | None, model: ModelLoader,
            output: str | os.PathLike | None = None, *, bar: Callable[..., Any] = progress_bar,
            should_stop: Callable[[], bool] | None = None, **options: Any) -> np.ndarray | Path:
    """Segment `volume` (a (z, y, x) array, or any path `reisoseg.io` reads) with `model` (see `prepare` for the
    options, `run` for `bar` and `should_stop`): `prepare`, `run`, `finish`.

    Without `output` the labels come back as a numpy array; with `output` (`*.zarr`) they are written there as
    OME-Zarr labels (plus `probabilities`, float16, if asked) and the path is returned. `spacing` (nm, z y x) is
    needed when the input carries none. `block` is the core each task predicts (input voxels; memory grows with
    it). `scheduler` is a Dask distributed address; by default blocks run in this process.

    `instances` (a model trained on an instance target): the labels are uint32 object ids, unique over the whole
    volume and the same as decoding the whole volume at once wherever the halo holds the flooding
    (`reisoseg.inference.instances`, which warns when halving the halo moves voxels between objects); the output
    also holds the semantic labels (`semantic`) and each object's score (attributes `reisoseg.scores`).
    `instance_halo` is the context (voxels, z y x) each block floods its objects with; `decoding` overrides the
    model's decoding settings (`reisoseg.instances.target.InstanceSettings` fields).
    """
    prepared = prepare(volume, spacing, model, output, **options)
    try:
        return finish(prepared, run(prepared, bar=bar, should_stop=should_stop))
    finally:
        prepared.close()


def _local_workers(device_type: str) -> int:
    """One worker per visible GPU, one on CPU (torch uses the cores)."""
    import torch

    return max(1, torch.cuda.device_count()) if device_type == "cuda" else 1


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
        raise ReIsoSegError(f"cannot reach the Dask scheduler at {address}: {error}") from error
    with client:
        futures = [client.submit(function, job, index, pure=False) for index in pending]
        for future in as_completed(futures):
            advance(future.result())
