"""Decoding settings chosen on validation data: the instance counterpart of nnU-Net's post-processing determination.

A small grid of seed thresholds, seed erosions, minimum volumes and minimum scores is scored on validation cases,
and the point with the best mean AP-75 (ties: F1@0.5, then the earlier point) wins. The grid is cheap: each
(threshold, erosion) pair is decoded once, without the cuts, and one contingency table per case serves every
(volume, score) cut (`Overlap.keeping`), so the search takes seconds on cached probabilities. The settings a model
was trained with are scored as well ("before"), and win ties, so calibration never makes the validation score worse.
"""
from __future__ import annotations

import itertools
import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from reisoseg.evaluation.instances import Overlap, overlap_metrics
from reisoseg.instances.decode import kept_objects, undecided_objects
from reisoseg.instances.target import DECODING_FIELDS, InstanceSettings
from reisoseg.io.atomic import atomic_file
from reisoseg.layout import INSTANCES_FILE

REPORTED = ("ap_75", "f1_50", "ap_50", "predicted_instances", "reference_instances", "false_objects",
            "missed_objects", "merges", "splits")


@dataclass(frozen=True)
class ValidationCase:
    """One validation volume: the model's class probabilities (classes, z, y, x), its spacing and its objects."""

    name: str
    probabilities: np.ndarray
    spacing: tuple[float, float, float]
    reference: np.ndarray


@dataclass(frozen=True)
class CalibrationGrid:
    """The decoding settings tried. Minimum volumes are multiples of the training-derived minimum."""

    seed_thresholds: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    # up to 60 nm: past one section at 40-50 nm spacing, where only an erosion across sections separates the seeds
    # of objects that touch in z
    seed_erosions_nm: tuple[float, ...] = (0.0, 10.0, 20.0, 30.0, 45.0, 60.0)
    min_volume_factors: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
    min_scores: tuple[float, ...] = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9)

    def points(self, base: InstanceSettings) -> list[InstanceSettings]:
        """`base` first, then every grid point (with `base`'s classes and boundary width)."""
        grid = [replace(base, seed_threshold=t, seed_erosion_nm=e, min_volume_nm3=f * base.min_volume_nm3,
                        min_score=s)
                for t, e, f, s in itertools.product(self.seed_thresholds, self.seed_erosions_nm,
                                                    self.min_volume_factors, self.min_scores)]
        return list(dict.fromkeys([base, *grid]))


@dataclass(frozen=True)
class Calibration:
    """The chosen settings and the mean validation metrics of the model's own settings and of the chosen ones."""

    settings: InstanceSettings
    before: dict[str, float]
    after: dict[str, float]
    cases: tuple[str, ...]
    points: int

    def record(self) -> dict:
        chosen = {k: self.settings.to_dict()[k] for k in DECODING_FIELDS}
        return {"chosen": chosen, "validation_cases": list(self.cases), "grid_points": self.points,
                "before": self.before, "after": self.after}


def _mean(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(float(np.mean([row[key] for row in rows])), 4) for key in REPORTED}


def calibrate(cases: Sequence[ValidationCase], base: InstanceSettings,
              grid: CalibrationGrid = CalibrationGrid()) -> Calibration:
    """Score every grid point on `cases` and return the best (see module doc)."""
    if not cases:
        raise ValueError("calibration needs at least one validation case")
    points = grid.points(base)
    scored: dict[InstanceSettings, list[dict[str, float]]] = {point: [] for point in points}
    for case in cases:
        decoded: dict[tuple[float, float], tuple] = {}
        for point in points:
            key = (point.seed_threshold, point.seed_erosion_nm)
            if key not in decoded:
                labels, ids, counts, scores = undecided_objects(case.probabilities, case.spacing, point)
                overlap = Overlap.of(case.reference, labels)
                # the table's compact ids follow the sorted original ids, as `undecided_objects` returns them
                decoded[key] = (overlap, counts, scores, {int(i): float(s) for i, s in zip(ids, scores)})
            overlap, counts, scores, by_id = decoded[key]
            kept = kept_objects(counts, scores, point, case.spacing)
            scored[point].append(overlap_metrics(overlap.keeping(kept), by_id))
    means = {point: _mean(rows) for point, rows in scored.items()}
    order = {point: index for index, point in enumerate(points)}
    best = max(points, key=lambda point: (means[point]["ap_75"], means[point]["f1_50"], -order[point]))
    return Calibration(best, means[base], means[best], tuple(case.name for case in cases), len(points))


def store_calibration(model_folder: str | os.PathLike, calibration: Calibration) -> Path:
    """Write the chosen settings into the model's instances.json, with the calibration record; the settings it was
    trained with stay under "uncalibrated", so that a later calibration starts from them again."""
    path = Path(model_folder) / INSTANCES_FILE
    record = json.loads(path.read_text())
    uncalibrated = record.get("uncalibrated", {key: record[key] for key in DECODING_FIELDS if key in record})
    record.update(calibration.record()["chosen"], uncalibrated=uncalibrated, calibration=calibration.record())
    with atomic_file(path) as temporary:
        temporary.write_text(json.dumps(record, indent=1))
    return path


def uncalibrated_settings(model_folder: str | os.PathLike) -> InstanceSettings:
    """The decoding settings a model was trained with (its instances.json without an earlier calibration)."""
    record = json.loads((Path(model_folder) / INSTANCES_FILE).read_text())
    return InstanceSettings.from_dict({**record, **record.get("uncalibrated", {})})
