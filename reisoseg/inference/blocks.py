"""Block geometry, the streamed statistics pass, and the work of one block.

Blocks tile the input volume; each predicts its *core* and writes only that. A block needs no halo of its own: it
predicts exactly those windows of nnU-Net's sliding-window grid over the whole volume that its core needs, and
accumulates them in nnU-Net's order, so every core voxel sees the same windows with the same Gaussian weights as in
nnU-Net's in-memory prediction, whatever the block size. When the data's spacing differs from the planned one, the
grid lives in the resampled volume: the block resamples just the box of input those windows need (at the
whole-volume coordinates, `reisoseg.nnunet_v1.resampling`) and reads its core back from their probabilities.

As in nnU-Net's preprocessing, the volume is first cropped to the bounding box of its nonzero voxels (outside it
the segmentation is background) and normalised with statistics of that whole box (gathered by `volume_statistics`).
"""
from __future__ import annotations

import itertools
import math
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from reisoseg.errors import ReIsoSegError

Box = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


def block_counts(shape: Sequence[int], block: Sequence[int]) -> tuple[int, ...]:
    """Blocks per axis that tile `shape`."""
    return tuple(math.ceil(s / b) for s, b in zip(shape, block))


def block_indices(shape: Sequence[int], block: Sequence[int]) -> list[tuple[int, int, int]]:
    """Indices of the blocks that tile `shape` (the last block along an axis may be smaller)."""
    return list(itertools.product(*(range(c) for c in block_counts(shape, block))))


def block_box(index: Sequence[int], shape: Sequence[int], block: Sequence[int]) -> Box:
    return tuple((i * b, min((i + 1) * b, s)) for i, b, s in zip(index, block, shape))  # type: ignore[return-value]


def box_slices(box: Sequence[tuple[int, int]], origin: Sequence[int] = (0, 0, 0)) -> tuple[slice, ...]:
    """Slices of `box` shifted by `origin` (e.g. from cropped to input coordinates)."""
    return tuple(slice(lo + o, hi + o) for (lo, hi), o in zip(box, origin))


@dataclass
class Statistics:
    """What the streamed first pass learns about the whole volume (over its nonzero bounding box)."""

    bbox: Box
    mean: float
    std: float
    voxels: int
    section_min: list[float]  # per section of the box: the clipping range of nnU-Net's in-plane resampling
    section_max: list[float]

    @classmethod
    def from_record(cls, record: dict) -> Statistics:
        """Back from the JSON manifest (`dataclasses.asdict` form)."""
        return cls(**{**record, "bbox": tuple(tuple(int(v) for v in axis) for axis in record["bbox"])})


class _Moments:
    """Count, mean and sum of squared deviations, merged block by block (Chan et al.) in float64."""

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    def add(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        values = values.astype(np.float64, copy=False)
        count, mean = values.size, float(values.mean())
        m2 = float(((values - mean) ** 2).sum())
        delta = mean - self.mean
        total = self.count + count
        self.mean += delta * count / total
        self.m2 += m2 + delta * delta * self.count * count / total
        self.count = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.count) if self.count else 0.0


class _Accumulator:
    """Moments and per-section ranges of the blocks added to it."""

    def __init__(self, sections: int, nonzero_only: bool):
        self.moments = _Moments()
        self.nonzero_only = nonzero_only
        self.section_min = np.full(sections, np.inf)
        self.section_max = np.full(sections, -np.inf)

    def add(self, values: np.ndarray, first_section: int) -> None:
        self.moments.add(values[values != 0] if self.nonzero_only else values)
        rows = slice(first_section, first_section + values.shape[0])
        self.section_min[rows] = np.minimum(self.section_min[rows], values.min(axis=(1, 2)))
        self.section_max[rows] = np.maximum(self.section_max[rows], values.max(axis=(1, 2)))


def volume_statistics(data: Any, source: str, block: Sequence[int], *, nonzero_only: bool,
                      progress: Callable[[], None] | None = None) -> Statistics:
    """Nonzero bounding box, mean, standard deviation and per-section range of a (lazily readable) volume, with one
    block in memory at a time.

    As nnU-Net: statistics cover the bounding box of the nonzero voxels (only the nonzero voxels when the plans
    normalise within the nonzero mask). Raises ReIsoSegError for NaN/Inf, empty or constant volumes.
    """
    from reisoseg.io.validation import IMAGE_DTYPES

    shape = tuple(int(s) for s in data.shape)
    if np.dtype(data.dtype) not in IMAGE_DTYPES:
        raise ReIsoSegError(f"{source}: unsupported image dtype {data.dtype}")
    if 0 in shape:
        raise ReIsoSegError(f"{source}: empty volume (shape {shape})")
    low, high = list(shape), [0, 0, 0]
    whole = _Accumulator(shape[0], nonzero_only)
    for index in block_indices(shape, block):
        box = block_box(index, shape, block)
        values = np.asarray(data[box_slices(box)])
        if values.dtype.kind == "f" and not np.isfinite(values).all():
            raise ReIsoSegError(f"{source}: image contains NaN or Inf (in z {box[0][0]}-{box[0][1] - 1})")
        whole.add(values, box[0][0])
        mask = values != 0
        if mask.any():
            for axis in range(3):
                other = tuple(a for a in range(3) if a != axis)
                where = np.flatnonzero(mask.any(axis=other))
                low[axis] = min(low[axis], box[axis][0] + int(where[0]))
                high[axis] = max(high[axis], box[axis][0] + int(where[-1]) + 1)
        if progress is not None:
            progress()
    if whole.section_min.min() == whole.section_max.max():
        raise ReIsoSegError(f"{source}: constant image (every voxel is {whole.section_min.min():g}): "
                            f"nothing to segment")
    bbox: Box = tuple(zip(low, high))  # type: ignore[assignment]
    accumulated = whole
    if bbox != tuple((0, s) for s in shape):  # nnU-Net crops first: only the box counts (a second read)
        cropped = tuple(hi - lo for lo, hi in bbox)
        accumulated = _Accumulator(cropped[0], nonzero_only)
        for index in block_indices(cropped, block):
            box = block_box(index, cropped, block)
            accumulated.add(np.asarray(data[box_slices(box, [lo for lo, _ in bbox])]), box[0][0])
    moments = accumulated.moments
    return Statistics(bbox, moments.mean, moments.std, moments.count, accumulated.section_min.tolist(),
                      accumulated.section_max.tolist())


@dataclass(frozen=True)
class BlockJob:
    """Everything one block needs, small and picklable (the model is loaded once per worker)."""

    source: str
    model: Any  # reisoseg.nnunet_v1.block_predictor.ModelReference
    device: str | None
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


def worker_device(name: str | None) -> Any:
    """The device for this worker: one GPU per worker thread when a process sees several."""
    import torch

    from reisoseg.devices import resolve_device

    device = resolve_device(name)
    if device.type == "cuda" and torch.cuda.device_count() > 1:
        if not hasattr(_gpu_of_thread, "index"):
            _gpu_of_thread.index = next(_next_gpu) % torch.cuda.device_count()
        return torch.device("cuda", _gpu_of_thread.index)
    return device


def _windows_for(needed: Sequence[tuple[int, int]], shape: Sequence[int], patch: Sequence[int],
                 step_size: float) -> tuple[list[tuple[int, int]], list[list[int]], list[int]]:
    """The windows of nnU-Net's grid over a volume of `shape` that touch the box `needed`.

    Returns the box they cover and their starts relative to it, both in the volume's coordinates, and the number of
    windows in the whole grid. As nnU-Net, a volume smaller than the patch is padded (evenly, with zeros) first.
    """
    from reisoseg.nnunet_v1.block_predictor import window_starts

    padded = [max(s, p) for s, p in zip(shape, patch)]
    below = [(p - s) // 2 for p, s in zip(padded, shape)]
    starts = window_starts(patch, padded, step_size)
    touching = [[s for s in axis if s < hi + b and s + p > lo + b]
                for axis, (lo, hi), p, b in zip(starts, needed, patch, below)]
    region = [(axis[0] - b, axis[-1] + p - b) for axis, p, b in zip(touching, patch, below)]
    relative = [[s - axis[0] for s in axis] for axis in touching]
    return region, relative, [len(axis) for axis in starts]


def _place(values: np.ndarray, inner: Sequence[tuple[int, int]], region: Sequence[tuple[int, int]]) -> np.ndarray:
    """`values` (covering `inner`) inside zeros covering `region`: nnU-Net pads normalised data with 0."""
    out = np.zeros([hi - lo for lo, hi in region], dtype=np.float32)
    out[tuple(slice(lo - r[0], hi - r[0]) for (lo, hi), r in zip(inner, region))] = values
    return out


def _clipped(region: Sequence[tuple[int, int]], shape: Sequence[int]) -> list[tuple[int, int]]:
    return [(max(lo, 0), min(hi, s)) for (lo, hi), s in zip(region, shape)]


def _read_cropped(job: BlockJob, data: Any, box: Sequence[tuple[int, int]]) -> np.ndarray:
    """Raw float32 values of a box given in the coordinates of the cropped (nonzero bounding box) volume."""
    return np.asarray(data[box_slices(box, [lo for lo, _ in job.statistics.bbox])], dtype=np.float32)


def _predict(job: BlockJob, predictor: Any, data: Any, core: Sequence[tuple[int, int]]) -> np.ndarray:
    """Class probabilities of the core (cropped coordinates) from the whole-volume window grid."""
    from reisoseg.nnunet_v1.resampling import axis_maps, resample_back, resample_box

    stats = job.statistics
    cropped = [hi - lo for lo, hi in stats.bbox]
    normalisation = predictor.normalisation(stats.mean, stats.std)
    maps = axis_maps(cropped, job.spacing, predictor.target_spacing, predictor.separate_axis(job.spacing))
    resampled = [m.target for m in maps]
    if resampled != cropped and not predictor.default_export:
        raise ReIsoSegError(f"{job.source}: this model's plans export with non-default resampling; segment data at "
                            f"the planned spacing {list(predictor.target_spacing)} nm, or use reisoseg predict")
    needed = core if resampled == cropped else [m.target_range_for_linear(lo, hi) for m, (lo, hi) in zip(maps, core)]
    region, starts, counts = _windows_for(needed, resampled, predictor.patch_size, job.step_size)
    inner = _clipped(region, resampled)
    if resampled == cropped:
        values = _read_cropped(job, data, inner)
    else:
        source = [m.source_range(lo, hi) for m, (lo, hi) in zip(maps, inner)]
        clip = ((np.array(stats.section_min), np.array(stats.section_max)) if maps[0].nearest
                else (min(stats.section_min), max(stats.section_max)))
        values = resample_box(_read_cropped(job, data, source), [lo for lo, _ in source], maps, inner, clip)
    image = _place(normalisation.apply(values), inner, region)
    probabilities = predictor.predict_windows(image, starts, use_gaussian=math.prod(counts) > 1,
                                              mirroring=job.mirroring)
    kept = probabilities[(slice(None), *(slice(lo - r[0], hi - r[0]) for (lo, hi), r in zip(needed, region)))]
    if resampled == cropped:
        return kept
    return resample_back(kept, [lo for lo, _ in needed], maps, core)


def run_block(job: BlockJob, index: tuple[int, int, int]) -> int:
    """Predict one block's core, write it, mark the block finished; returns the core's voxel count."""
    from reisoseg.inference.store import PROBABILITIES, BlockStore
    from reisoseg.nnunet_v1.block_predictor import cached_predictor

    predictor = cached_predictor(job.model, worker_device(job.device))
    box = block_box(index, job.shape, job.block)
    bbox = job.statistics.bbox
    core = [(max(lo, blo) - blo, min(hi, bhi) - blo) for (lo, hi), (blo, bhi) in zip(box, bbox)]  # cropped coords
    labels = np.zeros([hi - lo for lo, hi in box], dtype=np.uint8)
    probabilities = np.zeros((predictor.num_classes, *labels.shape), dtype=np.float16) if job.probabilities else None
    if probabilities is not None:
        probabilities[0] = 1  # background outside the nonzero bounding box
    if all(lo < hi for lo, hi in core):
        core_probabilities = _predict(job, predictor, _open(job.source), core)
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
