"""`reisoseg evaluate --ref REF --pred PRED`: Dice, IoU, precision, recall, HD95 (nm) and instance F1/AP."""
from __future__ import annotations

import argparse
import re

from reisoseg.errors import ReIsoSegError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="compare predictions with reference labels (table, JSON, CSV)",
        description="Per class: Dice, IoU, precision, recall and the 95 % Hausdorff distance in nm (from the "
                    "spacing); for instance classes also F1 at IoU 0.5, AP-50 and AP-75 ranked by object score, "
                    "VOI split/merge, the adjusted Rand index and the kinds of object errors (false, missed, "
                    "merged, split: by majority overlap), of the object ids in --ref_instances / "
                    "--pred_instances or else of 3D connected components (26-connectivity). REF and PRED are two "
                    "volumes or two folders matched by case name, in any format reisoseg reads.")
    parser.add_argument("--ref", required=True, help="reference volume or folder")
    parser.add_argument("--pred", required=True, help="prediction volume or folder")
    parser.add_argument("--classes", nargs="+", default=None, metavar="VALUE=NAME",
                        help="classes to evaluate, e.g. 1=mitochondria (default: every nonzero value in the "
                             "reference or the prediction)")
    parser.add_argument("--instance_classes", nargs="+", type=int, default=(1,), metavar="VALUE",
                        help="label values evaluated as instances too (default: 1)")
    parser.add_argument("--ref_instances", default=None,
                        help="reference object ids (volume or folder, e.g. a task's instancesTs)")
    parser.add_argument("--pred_instances", default=None,
                        help="predicted object ids (e.g. predictions/instances), scores read from NAME.scores.json "
                             "or the OME-Zarr attributes")
    parser.add_argument("--ignore_label", type=int, default=None, metavar="VALUE",
                        help="reference value of unannotated voxels (sparse labels: the task's `ignore` label), "
                             "left out of every metric")
    parser.add_argument("--spacing", type=float, nargs=3, default=None, metavar=("Z", "Y", "X"),
                        help="voxel size in nm for volumes that carry none")
    parser.add_argument("--json", default=None, help="write the results as JSON")
    parser.add_argument("--csv", default=None, help="write one row per case and class as CSV")
    parser.set_defaults(handler=run)


def parse_classes(items) -> dict[int, str] | None:
    if not items:
        return None
    classes = {}
    for item in items:
        match = re.fullmatch(r"(\d+)=([\w-]+)", item)
        if not match:
            raise ReIsoSegError(f"--classes {item!r}: expected VALUE=NAME, e.g. 1=mitochondria")
        classes[int(match.group(1))] = match.group(2)
    return classes


def run(args: argparse.Namespace) -> dict:
    from reisoseg.evaluation.report import evaluate, format_table, write_reports

    result = evaluate(args.ref, args.pred, classes=parse_classes(args.classes),
                      instance_classes=args.instance_classes, spacing=args.spacing,
                      reference_instances=args.ref_instances, prediction_instances=args.pred_instances,
                      ignore_label=args.ignore_label)
    print(format_table(result))
    write_reports(result, args.json, args.csv)
    return result
