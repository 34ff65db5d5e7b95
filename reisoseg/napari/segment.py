"""What the Segment widget runs: `reisoseg.segment` on a layer, blockwise into a resumable OME-Zarr, its result
read back as layers. Qt-free: the widget runs it in a worker thread with napari's progress bars."""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

import reisoseg
from reisoseg.console import progress_bar
from reisoseg.demo import demo_model_folder
from reisoseg.inference.segment import DEFAULT_BLOCK
from reisoseg.napari.layers import LayerData, layer_source, layer_spacing, segmentation_layers

DEFAULT_OUTPUT_FOLDER = Path.home() / "reisoseg_napari"


@dataclass(frozen=True)
class SegmentRequest:
    """What the widget asks for (the CLI's `segment` options)."""

    model: str | os.PathLike
    output: str | os.PathLike
    folds: Sequence[str] | None = None
    tta: bool = True
    instances: bool = False
    probabilities: bool = False
    block: Sequence[int] = DEFAULT_BLOCK
    overwrite: bool = False


def default_model() -> Path | None:
    """The model `reisoseg demo` trained in the working folder, if it has run there."""
    folder = demo_model_folder()
    return folder if folder.is_dir() else None


def default_output(layer_name: str) -> Path:
    return DEFAULT_OUTPUT_FOLDER / f"{layer_name.replace(os.sep, '_')}_seg.zarr"


def gui_threads() -> int:
    """Torch threads for a run beside napari's GUI: one core fewer than the machine has."""
    return max(1, (os.cpu_count() or 2) - 1)


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    saved = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def segment_layer(layer: Any, request: SegmentRequest, *, bar: Callable[..., Any] = progress_bar,
                  should_stop: Callable[[], bool] | None = None, threads: int | None = None) -> list[LayerData]:
    """Segment an Image layer: a layer this plugin read is segmented from its file (read block by block, and named
    in the run's record), any other from its data. A cancelled run (`should_stop`) continues when the same request
    runs again. Returns the output's layers."""
    source = layer_source(layer)
    volume = source if source is not None else np.asarray(layer.data)
    with torch_threads(threads or gui_threads()):
        written = reisoseg.segment(volume, layer_spacing(layer), request.model, request.output,
                                   folds=list(request.folds) if request.folds else None, tta=request.tta,
                                   instances=request.instances, probabilities=request.probabilities,
                                   block=tuple(request.block), overwrite=request.overwrite, bar=bar,
                                   should_stop=should_stop)
    return segmentation_layers(written)
