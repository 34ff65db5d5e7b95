"""`reisoseg <command>`: one entry point with subcommands; user errors print one line and exit 1."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from reisoseg import __version__
from reisoseg.errors import ReIsoSegError

COMMANDS = ("train", "predict", "segment", "measure", "synth", "demo", "convert", "check", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    import importlib

    parser = argparse.ArgumentParser(
        prog="reisoseg", description="Anisotropy-aware 3D segmentation of EM volumes (ReIsoSeg on nnU-Net v1).")
    parser.add_argument("--version", action="version", version=f"reisoseg {__version__}")
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
        print(f"reisoseg: {error.label}: {error.in_terms_of(getattr(args, 'flags', {}))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("reisoseg: interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
