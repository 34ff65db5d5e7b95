"""`reisoseg check TASK`: validate a raw nnU-Net v1 task folder before nnUNet_plan_and_preprocess."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from reisoseg.errors import ReIsoSegError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "check", help="validate a raw task folder (shapes, spacing, labels, NaN, constant images)",
        description="Check every training case of a raw task (a folder, or a task id/name under "
                    "$nnUNet_raw_data_base/nnUNet_raw_data): files listed in dataset.json exist and read, image "
                    "and label shapes and spacings agree, label values are declared, images are finite and not "
                    "constant. Warns when the largest spacing is not on z.")
    parser.add_argument("task", help="task folder, Task501_Name, 501 or Name")
    parser.set_defaults(handler=run)


def _task_folder(task: str) -> Path:
    if Path(task).is_dir():
        return Path(task)
    raw = os.environ.get("nnUNet_raw_data_base")
    if not raw:
        raise ReIsoSegError(f"{task}: not a folder, and nnUNet_raw_data_base is not set to look it up")
    root = Path(raw) / "nnUNet_raw_data"
    candidates = [p for p in root.glob("Task*") if p.is_dir() and (
        p.name == task or p.name.split("_", 1)[-1] == task or (task.isdigit() and p.name[4:7] == f"{int(task):03d}"))]
    if len(candidates) != 1:
        raise ReIsoSegError(f"{task}: {'no' if not candidates else 'more than one'} matching task in {root}")
    return candidates[0]


def run(args: argparse.Namespace) -> None:
    from reisoseg.io.convert import check_task

    folder = _task_folder(args.task)
    report = check_task(folder)
    for warning in report["warnings"]:
        print(f"reisoseg: warning: {warning}", file=sys.stderr)
    print(f"ok: {folder} ({report['training']} training, {report['test']} test cases)")
