"""What blockwise segmentation needs from a trained model: the seam between `inference/` and an engine.

An engine (today `reisoseg.nnunet_v1.block_predictor`) implements two small protocols and the caller passes the
loader in; nothing in `inference/` imports an engine:

- a `ModelLoader` is small, hashable and picklable, so it can travel to Dask workers. It answers what the driver
  needs before any weights are loaded (classes, how statistics are gathered, the object decoding settings, what to
  record for resuming) and loads the model once per worker and device;
- a `BlockModel` predicts the class probabilities of a block's core. It reads what it needs of the input through a
  `CroppedVolume` (the windows that touch the core, with any context and resampling its engine requires) and
  normalises it with the streamed whole-volume statistics, so that the result does not depend on the block size.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from reisoseg.inference.statistics import Statistics
from reisoseg.inference.tiles import box_slices


@dataclass(frozen=True)
class CroppedVolume:
    """The input as a model sees it: cropped to the nonzero bounding box of `statistics`, at `spacing` (nm)."""

    source: str
    data: Any  # lazily sliceable (z, y, x) input
    spacing: tuple[float, float, float]
    statistics: Statistics

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(hi - lo for lo, hi in self.statistics.bbox)  # type: ignore[return-value]

    def read(self, box: Sequence[tuple[int, int]]) -> np.ndarray:
        """Raw float32 values of `box`, given in cropped coordinates."""
        origin = [lo for lo, _ in self.statistics.bbox]
        return np.array(self.data[box_slices(box, origin)], dtype=np.float32)  # a copy: callers normalise in place


@runtime_checkable
class BlockModel(Protocol):
    """A loaded model on one device."""

    num_classes: int

    def predict_core(self, volume: CroppedVolume, core: Sequence[tuple[int, int]], *, step_size: float,
                     mirroring: bool) -> np.ndarray:
        """Class probabilities, float32 (classes, *core shape), of the box `core` (cropped coordinates)."""
        ...


@runtime_checkable
class ModelLoader(Protocol):
    """A model that is not loaded yet; hashable (it keys the per-worker cache) and picklable."""

    @property
    def num_classes(self) -> int: ...

    @property
    def use_nonzero_mask(self) -> bool:
        """Whether normalisation statistics cover only the nonzero voxels."""
        ...

    @property
    def instance_settings(self) -> Any:
        """`reisoseg.instances.target.InstanceSettings` of a model trained on an instance target, else None."""
        ...

    def settings(self) -> dict:
        """JSON-able identity of the model and its run options: a run resumes only with the same settings."""
        ...

    def load(self, device: Any) -> BlockModel: ...


_loaded: dict[tuple, BlockModel] = {}
_loaded_lock = threading.Lock()


def loaded_model(loader: ModelLoader, device: Any) -> BlockModel:
    """One loaded model per process, loader and device: the Dask tasks of one worker share it."""
    key = (loader, str(device))
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = loader.load(device)
        return _loaded[key]
