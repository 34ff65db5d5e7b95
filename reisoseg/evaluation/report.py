"""Evaluate folders of cases (or single volumes) and report as a table, JSON and CSV."""
from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from reisoseg.errors import ReIsoSegError
from reisoseg.evaluation.metrics import per_class_metrics
from reisoseg.io.validation import check_label_values, resolve_spacing

CASE_SUFFIXES = (".nii.gz", ".nii", ".mha", ".tif", ".tiff", ".h5", ".zarr")


def pair_cases(reference: Path, prediction: Path) -> list[tuple[str, Path, Path]]:
    """(case, reference, prediction) pairs: two volumes, or folders matched by case name."""
    from reisoseg.io.volume import detect_format, volume_stem

    if not reference.exists():
        raise ReIsoSegError(f"{reference}: no such file or folder")
    if not prediction.exists():
        raise ReIsoSegError(f"{prediction}: no such file or folder")
    if detect_format(reference) != "sections" or detect_format(prediction) != "sections":
        return [(volume_stem(reference), reference, prediction)]
    refs = {volume_stem(p): p for p in sorted(reference.iterdir()) if p.name.lower().endswith(CASE_SUFFIXES)}
    preds = {volume_stem(p): p for p in sorted(prediction.iterdir()) if p.name.lower().endswith(CASE_SUFFIXES)}
    missing = sorted(set(refs) - set(preds))
    if not refs:
        raise ReIsoSegError(f"{reference}: no volumes")
    if missing:
        raise ReIsoSegError(f"{prediction}: no prediction for {len(missing)} reference case(s), e.g. {missing[0]}")
    return [(case, refs[case], preds[case]) for case in refs]


def evaluate(reference: str | os.PathLike, prediction: str | os.PathLike, *,
             classes: Mapping[int, str] | None = None, instance_classes: Sequence[int] = (),
             spacing: Sequence[float] | None = None, reference_instances: str | os.PathLike | None = None,
             prediction_instances: str | os.PathLike | None = None, ignore_label: int | None = None) -> dict:
    """Metrics per case and class, and their means over cases (NaN HD95 values are left out of the mean).

    Instance metrics use the instance label volumes (or folders, matched by case name) where given, with the
    predicted objects' scores found beside them (`reisoseg.instances.scores`); else 3D connected components.
    Reference voxels of `ignore_label` (sparse annotation: nobody labelled them) count in no metric: whatever is
    predicted there is neither right nor wrong.
    """
    from reisoseg.instances.scores import read_scores
    from reisoseg.io.volume import open_volume

    cases = pair_cases(Path(reference), Path(prediction))
    ref_objects = dict((c, r) for c, _, r in pair_cases(Path(reference), Path(reference_instances))) \
        if reference_instances is not None else {}
    pred_objects = dict((c, p) for c, _, p in pair_cases(Path(reference), Path(prediction_instances))) \
        if prediction_instances is not None else {}
    per_case = {}
    for case, ref_path, pred_path in cases:
        ref_volume, pred_volume = open_volume(ref_path), open_volume(pred_path)
        if ref_volume.shape != pred_volume.shape:
            raise ReIsoSegError(f"{pred_path}: shape {pred_volume.shape} differs from reference {ref_path} "
                                f"shape {ref_volume.shape}")
        ref, pred = ref_volume.read(), pred_volume.read()
        check_label_values(str(ref_path), ref)
        check_label_values(str(pred_path), pred)
        objects = {}
        for key, paths in (("reference_instances", ref_objects), ("prediction_instances", pred_objects)):
            if case in paths:
                volume = open_volume(paths[case])
                if volume.shape != ref.shape:
                    raise ReIsoSegError(f"{paths[case]}: shape {volume.shape} differs from reference {ref_path} "
                                        f"shape {ref.shape}")
                objects[key] = volume.read()
                check_label_values(str(paths[case]), objects[key])
        if ignore_label is not None:
            unlabelled = ref == ignore_label
            ref, pred = np.where(unlabelled, 0, ref), np.where(unlabelled, 0, pred)
            objects = {key: np.where(unlabelled, 0, ids) for key, ids in objects.items()}
        if case in pred_objects:
            objects["scores"] = read_scores(pred_objects[case])
        case_classes = classes or {int(v): f"class_{int(v)}" for v in np.union1d(np.unique(ref), np.unique(pred))
                                   if v != 0}
        case_spacing = resolve_spacing(str(ref_path), ref_volume.spacing, spacing)
        per_case[case] = per_class_metrics(ref, pred, case_classes, spacing=case_spacing,
                                           instance_classes=instance_classes, **objects)
    names = sorted({name for metrics in per_case.values() for name in metrics})
    mean = {}
    for name in names:
        keys = sorted({k for metrics in per_case.values() for k in metrics.get(name, {})})
        mean[name] = {}
        for key in keys:
            values = [m[name][key] for m in per_case.values() if name in m and not math.isnan(m[name][key])]
            mean[name][key] = float(np.mean(values)) if values else float("nan")
    return {"per_case": per_case, "mean": mean}


def to_rows(result: dict) -> list[dict]:
    rows = []
    for case, metrics in {**result["per_case"], "mean": result["mean"]}.items():
        for name, values in metrics.items():
            rows.append({"case": case, "class": name, **values})
    return rows


def format_table(result: dict) -> str:
    rows = to_rows(result)
    columns = ["case", "class"] + [k for k in rows[0] if k not in ("case", "class")]
    text = [[str(r.get(c, "")) if c in ("case", "class") else f"{r.get(c, float('nan')):.4g}" for c in columns]
            for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in text)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(t, widths)) for t in text]
    return "\n".join(lines)


def write_reports(result: dict, json_path: str | None, csv_path: str | None) -> None:
    from reisoseg.io.atomic import atomic_file

    if json_path:
        with atomic_file(json_path) as temporary:
            temporary.write_text(json.dumps(result, indent=2))
    if csv_path:
        rows = to_rows(result)
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
        with atomic_file(csv_path) as temporary:
            temporary.write_text(buffer.getvalue())
