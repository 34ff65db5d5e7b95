"""The work of one block: read what its core needs, predict it with the worker's model, write the core.

Blocks tile the input volume; each predicts its *core* and writes only that. A block needs no halo of its own: the
model (`reisoseg.inference.model`) predicts the core from the windows of the whole-volume grid that touch it, so
the result does not depend on the block size. The volume is cropped to the bounding box of its nonzero voxels
(outside it the segmentation is background) and normalised with whole-volume statistics
(`reisoseg.inference.statistics`).
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from reisoseg.inference.model import CroppedVolume, ModelLoader, loaded_model
from reisoseg.inference.statistics import Statistics
from reisoseg.inference.tiles import block_box, box_slices


@dataclass(frozen=True)
class BlockJob:
    """Everything one block needs, small and picklable (the model is loaded once per worker)."""

    source: str
    model: ModelLoader
    device: str  # resolved once by the driver: cpu, cuda or mps
    output: str  # the BlockStore target
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    block: tuple[int, int, int]
    statistics: Statistics
    step_size: float
    mirroring: bool
    probabilities: bool
    labels_array: str = "0"  # where the semantic labels go (instance runs keep "0" for the objects)
    instance_settings: Any = None  # reisoseg.instances.target.InstanceSettings of an instance model


_volumes: dict[str, Any] = {}
_volumes_lock = threading.Lock()
_in_memory: dict[str, np.ndarray] = {}


def register_array(name: str, data: np.ndarray) -> None:
    """Make an in-memory array readable by blocks of this process under `name` (local scheduler only)."""
    _in_memory[name] = data


def forget_array(name: str) -> None:
    _in_memory.pop(name, None)


def _open(source: str) -> Any:
    if source in _in_memory:
        return _in_memory[source]
    with _volumes_lock:
        if source not in _volumes:
            from reisoseg.io.volume import open_volume

            _volumes[source] = open_volume(source).data
        return _volumes[source]


_gpu_of_thread = threading.local()
_next_gpu = itertools.count()


def worker_device(device_type: str) -> Any:
    """The device for this worker: one GPU per worker thread when a process sees several."""
    import torch

    if device_type == "cuda" and torch.cuda.device_count() > 1:
        if not hasattr(_gpu_of_thread, "index"):
            _gpu_of_thread.index = next(_next_gpu) % torch.cuda.device_count()
        return torch.device("cuda", _gpu_of_thread.index)
    return torch.device(device_type)


def run_block(job: BlockJob, index: tuple[int, int, int]) -> int:
    """Predict one block's core, write it, mark the block finished; returns the core's voxel count."""
    from reisoseg.inference.store import PROBABILITIES, BlockStore

    model = loaded_model(job.model, worker_device(job.device))
    box = block_box(index, job.shape, job.block)
    bbox = job.statistics.bbox
    core = [(max(lo, blo) - blo, min(hi, bhi) - blo) for (lo, hi), (blo, bhi) in zip(box, bbox)]  # cropped coords
    labels = np.zeros([hi - lo for lo, hi in box], dtype=np.uint8)
    probabilities = np.zeros((model.num_classes, *labels.shape), dtype=np.float16) if job.probabilities else None
    if probabilities is not None:
        probabilities[0] = 1  # background outside the nonzero bounding box
    if all(lo < hi for lo, hi in core):
        volume = CroppedVolume(job.source, _open(job.source), job.spacing, job.statistics)
        core_probabilities = model.predict_core(volume, core, step_size=job.step_size, mirroring=job.mirroring)
        inside = tuple(slice(lo + b[0] - x[0], hi + b[0] - x[0]) for (lo, hi), b, x in zip(core, bbox, box))
        labels[inside] = core_probabilities.argmax(0)
        if job.instance_settings is not None:
            labels = job.instance_settings.semantic(labels)
        if probabilities is not None:
            probabilities[(slice(None), *inside)] = core_probabilities
    store = BlockStore(job.output)
    store.array(job.labels_array)[box_slices(box)] = labels
    if probabilities is not None:
        store.array(PROBABILITIES)[(slice(None), *box_slices(box))] = probabilities
    store.mark_finished(index)
    return labels.size
