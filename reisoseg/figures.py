"""Figures for the demo and benchmarks (matplotlib, Agg backend, written atomically)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from reisoseg.io.atomic import atomic_file
from reisoseg.layout import BRANCH_LOSSES_FILE


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    with atomic_file(path) as temporary:
        figure.savefig(temporary, dpi=110, bbox_inches="tight", format="png")
    _pyplot().close(figure)
    return path


def plot_training_curve(fold: Path, path: Path) -> Path:
    """Total, L_iso and L_ani per epoch (training) and L_ani (validation) from `branch_losses.json`."""
    history = json.loads((Path(fold) / BRANCH_LOSSES_FILE).read_text())
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6, 3.5))
    epochs = [h["epoch"] + 1 for h in history]
    for key, label in (("total_train", "train total"), ("train_iso", "train L_iso"), ("train_ani", "train L_ani"),
                       ("val_ani", "validation L_ani")):
        values = [h.get(key, np.nan) for h in history]
        axis.plot(epochs, values, marker="o" if len(epochs) < 20 else None, label=label)
    axis.set_xlabel("epoch")
    axis.set_ylabel("loss (Dice + CE, weighted)")
    axis.legend()
    axis.set_title("ReIsoSeg training")
    return _save(figure, Path(path))


def _overlay(axis, image: np.ndarray, mask: np.ndarray, title: str, aspect: float, objects: bool = False) -> None:
    """Image with a mask on top: one colour per class, or one of 20 colours per object id."""
    axis.imshow(image, cmap="gray", aspect=aspect, interpolation="nearest")
    if mask is not None:
        shown = (mask.astype(np.int64) - 1) % 20 + 1 if objects else mask
        axis.imshow(np.ma.masked_where(mask == 0, shown), cmap="tab20" if objects else "autumn",
                    alpha=0.55 if objects else 0.45, aspect=aspect, interpolation="nearest", vmin=1 if objects else 0,
                    vmax=20 if objects else max(1, int(mask.max())))
    axis.set_title(title)
    axis.axis("off")


def plot_overlays(raw: Path, predictions: Path, case: str, output: Path, *,
                  instances: Path | None = None) -> dict[str, str]:
    """xy section and xz reslice of one case: image, truth and prediction side by side; with `instances` (a folder
    of decoded objects) truth and prediction are coloured by object, the truth from the task's instancesTs/."""
    from reisoseg.io.nifti import read_nifti

    image, spacing = read_nifti(Path(raw) / "imagesTs" / f"{case}_0000.nii.gz")
    objects = instances is not None
    truth, _ = read_nifti(Path(raw) / ("instancesTs" if objects else "labelsTs") / f"{case}.nii.gz")
    prediction, _ = read_nifti((Path(instances) if objects else Path(predictions)) / f"{case}.nii.gz")
    z = int(np.argmax((truth > 0).sum((1, 2))))
    y = int(np.argmax((truth > 0).sum((0, 2))))
    views = {"overlay_xy": (image[z], truth[z], prediction[z], 1.0, f"section z={z}"),
             "overlay_xz": (image[:, y], truth[:, y], prediction[:, y], spacing[0] / spacing[2], f"reslice y={y}")}
    plt = _pyplot()
    written = {}
    for name, (img, ref, pred, aspect, where) in views.items():
        figure, axes = plt.subplots(1, 3, figsize=(10, 3.6 if name == "overlay_xy" else 2.6))
        _overlay(axes[0], img, None, f"image ({where})", aspect)
        _overlay(axes[1], img, ref, "truth" + (" objects" if objects else ""), aspect, objects)
        _overlay(axes[2], img, pred, "prediction" + (" objects" if objects else ""), aspect, objects)
        written[name] = str(_save(figure, Path(output) / f"{name}.png"))
    return written
