"""Options shared by several commands."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from reisoseg.errors import ReIsoSegError
from reisoseg.instances.target import DECODING_FIELDS
from reisoseg.io.nnunet_task import ENGINES, RAW_VARIABLES
from reisoseg.layout import (
    DEFAULT_CONFIGURATION,
    DEFAULT_PLANS,
    DEFAULT_TRAINER,
    FINAL_CHECKPOINT,
    model_folder,
    v2_model_name,
    v2_plans_identifier,
)


def add_task_output_options(parser: argparse.ArgumentParser) -> None:
    """--engine, --raw_data_base and --overwrite, for commands that write an nnU-Net raw task."""
    parser.add_argument("--engine", choices=ENGINES, default="v1",
                        help="write the task for nnU-Net v1 (nnUNet_raw_data/TaskXXX_Name) or v2 "
                             "(DatasetXXX_Name, v2's dataset.json; --task is the dataset id) (default: v1)")
    parser.add_argument("--raw_data_base", default=None,
                        help="raw data folder (default: $nnUNet_raw_data_base for v1, $nnUNet_raw for v2)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing task folder")


def raw_data_base(args: argparse.Namespace) -> str:
    """The raw data folder from --raw_data_base or the engine's variable; ReIsoSegError if neither is given."""
    variable = RAW_VARIABLES[args.engine]
    raw = args.raw_data_base or os.environ.get(variable)
    if not raw:
        raise ReIsoSegError(f"no output location: pass --raw_data_base or set {variable}")
    return raw


def add_output_options(parser: argparse.ArgumentParser) -> None:
    """--verbose and --no_progress: what a long-running command shows."""
    parser.add_argument("--verbose", action="store_true",
                        help="show nnU-Net's own messages here instead of in engine.log in the output folder")
    parser.add_argument("--no_progress", action="store_true", help="no progress bars")


def engine_log(output: str | os.PathLike, verbose: bool) -> Path:
    """engine.log in a command's output folder (beside the output when it is a file or a zarr); says where, on
    standard error, unless `verbose` shows the messages instead."""
    from reisoseg.io.base import VOLUME_SUFFIXES
    from reisoseg.layout import ENGINE_LOG

    output = Path(output)
    log = (output.parent if output.name.lower().endswith(VOLUME_SUFFIXES) else output) / ENGINE_LOG
    if not verbose and os.environ.get("RANK", "0") == "0":  # once for a distributed run
        print(f"nnU-Net's messages: {log}", file=sys.stderr)
    return log


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """The trained model and how to run it: nnUNet_predict's -t/-tr/-m/-p/-f/-chk, step size, TTA, device."""
    from reisoseg.devices import DEVICE_CHOICES

    parser.add_argument("-t", "--task_name", default=None,
                        help="task as Task501_Name, 501 or Name")
    parser.add_argument("-tr", "--trainer_class_name", default=DEFAULT_TRAINER,
                        help="trainer the model was trained with (default: %(default)s)")
    parser.add_argument("-m", "--model", default=DEFAULT_CONFIGURATION,
                        help="configuration (default: %(default)s), or a BioImage.IO package (model.zip) written by "
                             "reisoseg export-bioimageio, which needs no -t")
    parser.add_argument("-p", "--plans_identifier", default=DEFAULT_PLANS,
                        help="plans the model was trained with (default: %(default)s)")
    parser.add_argument("-f", "--folds", nargs="+", default=None,
                        help="folds to ensemble, e.g. -f 0 1 or -f all (default: every fold_* that holds the "
                             "checkpoint, else all)")
    parser.add_argument("-chk", "--checkpoint", default=FINAL_CHECKPOINT,
                        help="checkpoint name without .model (default: %(default)s; model_best is chosen by the "
                             "ani branch's validation Dice)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), default=None,
                        help="EM input: voxel size in nm when the files carry none (must agree when they do)")
    parser.add_argument("--disable_tta", action="store_true",
                        help="no mirroring test-time augmentation: 8x faster, usually slightly less accurate")
    parser.add_argument("--step_size", type=float, default=0.5,
                        help="sliding-window step as a fraction of the patch (default: %(default)s; larger is "
                             "faster, smaller overlaps more and is often more accurate)")
    parser.add_argument("--disable_mixed_precision", action="store_true", help="float32 on CUDA too")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default=None,
                        help="device (default: cuda if available, else mps, else cpu)")


DECODING_HELP = {"seed_threshold": "interior probability of a seed voxel",
                 "seed_erosion_nm": "seeds keep interior voxels farther than this from any other voxel (nm)",
                 "min_volume_nm3": "objects smaller than this are dropped (nm³)",
                 "min_score": "objects whose score (mean foreground probability) is lower are dropped"}


def add_decoding_options(parser: argparse.ArgumentParser) -> None:
    """Flags that override the model's object decoding (instances.json: trained, or calibrated)."""
    group = parser.add_argument_group("object decoding (default: the model's, calibrated where it was)")
    for name in DECODING_FIELDS:
        group.add_argument(f"--{name}", type=float, default=None, help=DECODING_HELP[name])


ENGINE_HELP = ("the engine the model was trained on (default: the one whose results folder holds it; say which "
               "when both do)")


def _model_folders(engine: str, args: argparse.Namespace) -> list[Path]:
    """The folders of this engine's results that would hold the model -t/-tr/-m/-p name (task by id or name)."""
    results = os.environ.get({"v1": "RESULTS_FOLDER", "v2": "nnUNet_results"}[engine])
    if not results or args.task_name is None:
        return []
    prefix = {"v1": "Task", "v2": "Dataset"}[engine]
    task = str(args.task_name)
    pattern = (f"{prefix}{int(task):03d}_*" if task.isdigit() else task if task.startswith(("Task", "Dataset"))
               else f"{prefix}???_{task}")
    if engine == "v1":
        return [model_folder(results, d.name, args.trainer_class_name, args.plans_identifier, args.model)
                for d in (Path(results) / "nnUNet" / args.model).glob(pattern)]
    name = v2_model_name(args.trainer_class_name, v2_plans_identifier(args.plans_identifier), args.model)
    return [d / name for d in Path(results).glob(pattern)]


def model_engine(args: argparse.Namespace) -> str:
    """--engine if given, else the engine whose results hold the named model (v1 when neither does, so that its
    message says what is missing)."""
    if args.engine is not None:
        return args.engine
    found = [engine for engine in ENGINES if any(folder.is_dir() for folder in _model_folders(engine, args))]
    if len(found) > 1:
        raise ReIsoSegError(f"both engines hold a model of {args.trainer_class_name} on task {args.task_name}: pass "
                            f"--engine v1 or --engine v2")
    return found[0] if found else "v1"


def decoding_overrides(args: argparse.Namespace) -> dict[str, float]:
    return {name: getattr(args, name) for name in DECODING_FIELDS if getattr(args, name) is not None}
