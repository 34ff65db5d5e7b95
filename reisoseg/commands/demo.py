"""`reisoseg demo`: the whole workflow on a synthetic anisotropic EM dataset, with figures and a summary."""
from __future__ import annotations

import argparse

from reisoseg.devices import DEVICE_CHOICES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo", help="synthesise, train, predict and evaluate end to end (minutes on a laptop CPU)",
        description="Generate a synthetic anisotropic EM task, plan it with nnU-Net v1, train ReIsoSegTrainer "
                    "(pattern picked from the spacing) within a time budget, predict the held-out volumes, "
                    "evaluate Dice/IoU and write summary.json, training_curve.png and overlay PNGs. A rerun "
                    "reuses finished steps.")
    parser.add_argument("--output", default="reisoseg_demo", help="output folder (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="delete the output folder first and redo every step")
    parser.add_argument("--quick", action="store_true",
                        help="tiny volumes and a few iterations: checks the pipeline in about a minute, "
                             "no meaningful Dice")
    parser.add_argument("--budget_minutes", type=float, default=None,
                        help="training wall time (default: 6.5, or 0.05 with --quick)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: 0)")
    parser.add_argument("--verbose", action="store_true",
                        help="show nnU-Net's own messages (default: they go to OUTPUT/engine.log)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default=None,
                        help="device (default: cuda, else mps, else cpu)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> dict:
    from reisoseg.demo import DemoSettings, run_demo

    settings = DemoSettings.quick() if args.quick else DemoSettings()
    settings.seed = args.seed
    settings.device = args.device
    if args.budget_minutes is not None:
        settings.budget_minutes = args.budget_minutes
    return run_demo(args.output, settings, fresh=args.fresh, verbose=args.verbose)
