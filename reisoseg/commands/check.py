"""`reisoseg check TASK`: validate a raw nnU-Net v1 task folder before nnUNet_plan_and_preprocess."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reisoseg.errors import ReIsoSegError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "check", help="validate a raw task folder (shapes, spacing, labels, NaN, constant images)",
        description="Check every training case of a raw task (a folder, or a task id/name under "
                    "$nnUNet_raw_data_base/nnUNet_raw_data): files listed in dataset.json exist and read, image "
                    "and label shapes and spacings agree, label values are declared, images are finite and not "
                    "constant. Warns when the largest spacing is not on z; reports the fraction of training voxels "
                    "annotated (not labelled `ignore`).")
    parser.add_argument("task", help="task folder, Task501_Name, 501 or Name")
    parser.set_defaults(handler=run)


def _task_folder(task: str) -> Path:
    if Path(task).is_dir():
        return Path(task)
    from reisoseg.nnunet_v1.tasks import require_environment, resolve_task

    raw = require_environment("nnUNet_raw_data_base")["nnUNet_raw_data_base"]
    folder = raw / "nnUNet_raw_data" / resolve_task(task)
    if not folder.is_dir():
        raise ReIsoSegError(f"{folder}: no raw task folder")
    return folder


def run(args: argparse.Namespace) -> None:
    from reisoseg.io.convert import check_task

    folder = _task_folder(args.task)
    report = check_task(folder)
    for warning in report["warnings"]:
        print(f"reisoseg: warning: {warning}", file=sys.stderr)
    print(f"ok: {folder} ({report['training']} training, {report['test']} test cases; "
          f"{report['annotated_fraction']:.1%} of the training voxels annotated)")
