"""Options shared by several commands."""
from __future__ import annotations

import argparse
import os

from reisoseg.errors import ReIsoSegError


def add_task_output_options(parser: argparse.ArgumentParser) -> None:
    """--raw_data_base and --overwrite, for commands that write an nnU-Net v1 raw task."""
    parser.add_argument("--raw_data_base", default=None,
                        help="nnU-Net raw data base folder (default: $nnUNet_raw_data_base)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing task folder")


def raw_data_base(args: argparse.Namespace) -> str:
    """The raw data base from --raw_data_base or the environment; ReIsoSegError if neither is given."""
    raw = args.raw_data_base or os.environ.get("nnUNet_raw_data_base")
    if not raw:
        raise ReIsoSegError("no output location: pass --raw_data_base or set nnUNet_raw_data_base")
    return raw
