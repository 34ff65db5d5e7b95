"""`reisoseg <command>`: one entry point with subcommands; user errors print one line and exit 1."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable, Sequence

from reisoseg import __version__
from reisoseg.errors import ReIsoSegError

DEBUG_VARIABLE = "REISOSEG_DEBUG"  # set to 1: as --debug, for runs whose command line is hard to change
COMMANDS = ("train", "predict", "segment", "measure", "synth", "demo", "convert", "check", "evaluate",
            "calibrate_instances", "export_bioimageio")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="reisoseg", description="Anisotropy-aware 3D segmentation of EM volumes (ReIsoSeg on nnU-Net v1).")
    parser.add_argument("--version", action="version", version=f"reisoseg {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help=f"after a one-line error, also print its full traceback and cause (or set "
                             f"{DEBUG_VARIABLE}=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"reisoseg.commands.{name}").add_parser(subparsers)
    for command in subparsers.choices.values():
        add_flag_names(command)
    return parser


def add_flag_names(parser: argparse.ArgumentParser) -> None:
    """Record which flag sets each parameter (argparse dest), so that errors can name the flag."""
    flags = {action.dest: max(action.option_strings, key=len) for action in parser._actions if action.option_strings}
    parser.set_defaults(flags=flags)


def run_command(handler: Callable[[argparse.Namespace], object], args: argparse.Namespace) -> int:
    """Run a parsed command; ReIsoSegError becomes `reisoseg: error: ...` on stderr and exit code 1 (a training
    stopped by SIGTERM: `reisoseg: stopped: ...` and 143)."""
    try:
        handler(args)
    except ReIsoSegError as error:
        if getattr(args, "debug", False) or os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            print_traceback_and_cause(error)
        print(f"reisoseg: {error.label}: {error.in_terms_of(getattr(args, 'flags', {}))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("reisoseg: interrupted", file=sys.stderr)
        return 130
    return 0


def print_traceback_and_cause(error: BaseException) -> None:
    """The whole chain on standard error, the cause too where a one-line error hid it (`raise ... from None`)."""
    hidden = error.__context__ if error.__suppress_context__ and error.__cause__ is None else None
    if hidden is not None:
        traceback.print_exception(hidden, file=sys.stderr)
        print("\nwhich was reported as:\n", file=sys.stderr)
    traceback.print_exception(error, file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
