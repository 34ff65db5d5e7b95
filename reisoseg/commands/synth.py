"""`reisoseg synth`: write a synthetic anisotropic EM task in nnU-Net's raw layout (v1 or v2)."""
from __future__ import annotations

import argparse

from reisoseg.commands.options import add_task_output_options, raw_data_base
from reisoseg.errors import ReIsoSegError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "synth", help="generate a synthetic EM task (nnU-Net raw layout, v1 or v2)",
        description="Generate EM-like anisotropic volumes with ground truth and write them as "
                    "nnUNet_raw_data/TaskXXX_Name (v1) or DatasetXXX_Name (--engine v2): imagesTr, labelsTr, "
                    "imagesTs, labelsTs, dataset.json.")
    parser.add_argument("--task", type=int, default=501, help="task id (default: %(default)s)")
    parser.add_argument("--name", default="SynthEM", help="task name (default: %(default)s)")
    parser.add_argument("--num_training", type=int, default=6, help="training volumes (default: %(default)s)")
    parser.add_argument("--num_test", type=int, default=2, help="held-out test volumes (default: %(default)s)")
    parser.add_argument("--shape", type=int, nargs=3, default=(32, 192, 192), metavar=("Z", "Y", "X"),
                        help="sections, y, x per volume (default: 32 192 192)")
    parser.add_argument("--ratio", type=int, default=8,
                        help="z spacing over xy spacing, 1-12 (default: %(default)s, i.e. 40 x 5 x 5 nm)")
    parser.add_argument("--xy_spacing", type=float, default=5.0, help="in-plane voxel size in nm (default: 5)")
    parser.add_argument("--seed", type=int, default=0, help="random seed; same seed, same task (default: 0)")
    parser.add_argument("--classes", nargs="+", default=["mitochondria"], choices=["mitochondria", "synapse"],
                        help="label classes to write (default: mitochondria)")
    parser.add_argument("--instances", action="store_true",
                        help="train separate mitochondria: write the instance target (interior / boundary classes "
                             "from the object ids) and the test volumes' object ids (instancesTs/)")
    add_task_output_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from reisoseg.synthetic import SynthParams, make_synthetic_task

    raw = raw_data_base(args)
    if args.num_training < 1 or args.num_test < 0:
        raise ReIsoSegError("--num_training must be at least 1 and --num_test at least 0")
    if not 1 <= args.ratio <= 12:
        raise ReIsoSegError(f"--ratio must be 1-12, got {args.ratio}")
    if min(args.shape) < 8:
        raise ReIsoSegError(f"--shape must be at least 8 voxels per axis, got {args.shape}")
    try:
        folder = make_synthetic_task(raw, args.task, args.name, num_training=args.num_training,
                                     num_test=args.num_test, shape=args.shape, ratio=args.ratio, seed=args.seed,
                                     classes=args.classes, params=SynthParams(xy_spacing_nm=args.xy_spacing),
                                     overwrite=args.overwrite, instances=args.instances, engine=args.engine)
    except (FileExistsError, ValueError) as error:
        raise ReIsoSegError(str(error)) from error
    print(f"done: {folder}")
