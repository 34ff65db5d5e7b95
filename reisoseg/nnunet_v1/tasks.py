"""Task and environment resolution with one-line errors instead of nnU-Net's tracebacks."""
from __future__ import annotations

import os
import re
from pathlib import Path

from reisoseg.errors import ReIsoSegError

ENVIRONMENT_FOLDERS = {
    "nnUNet_raw_data_base": "raw data (nnUNet_raw_data/TaskXXX_Name inside it)",
    "nnUNet_preprocessed": "preprocessed data and plans",
    "RESULTS_FOLDER": "trained models",
}


def require_environment(*names: str) -> dict[str, Path]:
    """The folders nnU-Net v1 is told about through environment variables; ReIsoSegError if unset or missing."""
    folders = {}
    for name in names or tuple(ENVIRONMENT_FOLDERS):
        value = os.environ.get(name)
        if not value:
            raise ReIsoSegError(f"environment variable {name} is not set: point it at the folder for "
                                f"{ENVIRONMENT_FOLDERS[name]} (export {name}=/path/to/folder)")
        if not Path(value).is_dir():
            raise ReIsoSegError(f"{name}={value}: folder does not exist")
        folders[name] = Path(value)
    return folders


def _task_folders() -> list[str]:
    names = set()
    for variable, sub in (("nnUNet_preprocessed", ""), ("nnUNet_raw_data_base", "nnUNet_raw_data")):
        root = os.environ.get(variable)
        if root and (Path(root) / sub).is_dir():
            names.update(p.name for p in (Path(root) / sub).iterdir() if p.is_dir() and p.name.startswith("Task"))
    results = os.environ.get("RESULTS_FOLDER")
    if results:
        for config in (Path(results) / "nnUNet").glob("*"):
            names.update(p.name for p in config.glob("Task*") if p.is_dir())
    return sorted(names)


def resolve_task(task: str | int) -> str:
    """`Task501_X`, `501` or `X` -> `Task501_X`, looked up in the nnU-Net folders."""
    text = str(task)
    known = _task_folders()
    if re.fullmatch(r"\d+", text):
        matches = [n for n in known if n.startswith(f"Task{int(text):03d}_")]
    elif text.startswith("Task"):
        matches = [n for n in known if n == text]
    else:
        matches = [n for n in known if n.split("_", 1)[-1] == text]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        listing = ", ".join(known) or "none"
        raise ReIsoSegError(f"unknown task {text!r}: no such task in nnUNet_raw_data_base, nnUNet_preprocessed or "
                            f"RESULTS_FOLDER (known: {listing})")
    raise ReIsoSegError(f"task {text!r} is ambiguous: {', '.join(matches)}")


def parse_fold(fold: str | int) -> str | int:
    """'all' or a non-negative integer."""
    if str(fold) == "all":
        return "all"
    if re.fullmatch(r"\d+", str(fold)):
        return int(fold)
    raise ReIsoSegError(f"unknown fold {fold!r}: use a number (0-4 for the 5-fold split) or 'all'")


def fold_validation_files(model_folder: str | os.PathLike, fold: str | int) -> list[tuple[str, Path, Path]]:
    """(case, image, object ids) of the cases nnU-Net v1 held out of `fold` (its splits_final.pkl), from the raw
    task's imagesTr/ and instancesTr/ (written for tasks with an instance target)."""
    from reisoseg.safe_loading import safe_load_pickle

    folders = require_environment("nnUNet_raw_data_base", "nnUNet_preprocessed")
    task = Path(model_folder).parent.name
    splits = folders["nnUNet_preprocessed"] / task / "splits_final.pkl"
    if not splits.is_file():
        raise ReIsoSegError(f"{splits}: no cross-validation splits, so fold {fold} has no validation cases")
    raw = folders["nnUNet_raw_data_base"] / "nnUNet_raw_data" / task
    if not (raw / "instancesTr").is_dir():
        raise ReIsoSegError(f"{raw / 'instancesTr'}: not found (the task was written without its training objects); "
                            f"pass --images and --references")
    cases = [str(case) for case in safe_load_pickle(splits)[int(fold)]["val"]]
    return [(case, raw / "imagesTr" / f"{case}_0000.nii.gz", raw / "instancesTr" / f"{case}.nii.gz")
            for case in cases]
