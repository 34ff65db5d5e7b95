"""`reisoseg segment`: blockwise, resumable segmentation of volumes larger than memory, locally or on Dask."""
from __future__ import annotations

import argparse

from reisoseg.commands.options import (
    ENGINE_HELP,
    add_decoding_options,
    add_model_options,
    add_output_options,
    decoding_overrides,
    engine_log,
    model_engine,
)
from reisoseg.engines import is_package, v2_engine_module
from reisoseg.errors import ReIsoSegError
from reisoseg.io.nnunet_task import ENGINES
from reisoseg.layout import FINAL_CHECKPOINT, v2_plans_identifier


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "segment", help="segment a volume of any size block by block into OME-Zarr labels (resumable, Dask)",
        description="Segment a large EM volume (zarr/OME-Zarr, file.h5:/key, TIFF, NIfTI; read lazily where the "
                    "format allows) block by block with memory bounded by the block size. Blocks are normalised "
                    "with whole-volume statistics (a streamed first pass) and predicted with nnU-Net's sliding "
                    "window, Gaussian weighting and optional mirroring. Each block predicts the windows of the "
                    "whole-volume grid that touch it (no halo to choose), so the result equals nnU-Net's in-memory "
                    "prediction; data at another spacing than the plans are resampled as nnU-Net does. "
                    "The output is built in OUT.zarr.partial and renamed to OUT.zarr when complete; started again "
                    "after an interruption, the run skips finished blocks.")
    parser.add_argument("-i", "--input", required=True, help="input volume (e.g. raw.zarr, stack.h5:/raw, stack.tif)")
    parser.add_argument("-o", "--output", required=True, help="output OME-Zarr labels, e.g. segmentation.zarr")
    add_model_options(parser)
    parser.add_argument("--model_folder", default=None,
                        help="a trained model folder (v1: TRAINER__PLANS, v2: TRAINER__PLANS__CONFIGURATION, with "
                             "fold_* inside) instead of -t/-tr/-m/-p")
    parser.add_argument("--engine", choices=ENGINES, default=None, help=ENGINE_HELP)
    parser.add_argument("--block", type=int, nargs=3, metavar=("Z", "Y", "X"), default=(128, 512, 512),
                        help="block core in input voxels; memory grows with it (default: 128 512 512)")
    parser.add_argument("--save_probabilities", action="store_true",
                        help="also write class probabilities (float16) as OUT.zarr/probabilities")
    parser.add_argument("--instances", action="store_true",
                        help="write separate objects: uint32 ids unique over the whole volume, the same as "
                             "decoding the volume at once wherever the halo holds the flooding (model trained on an "
                             "instance target); the semantic labels go to OUT.zarr/semantic and object scores to "
                             "the attributes")
    parser.add_argument("--instance_halo", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                        help="context each block floods its objects with, in voxels (default: 4 32 32); a warning "
                             "says when halving it moves voxels between objects, i.e. when to raise it")
    add_decoding_options(parser)
    parser.add_argument("--dask-scheduler", "--dask_scheduler", dest="dask_scheduler", default=None,
                        metavar="ADDRESS", help="run the blocks on this Dask distributed scheduler, e.g. "
                                                "tcp://10.0.0.5:8786 (default: in this process)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing output, or an unfinished one made with other settings")
    add_output_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from reisoseg.console import engine_output
    from reisoseg.engines import model_from_folder
    from reisoseg.inference.segment import segment

    checkpoint = None if args.checkpoint == FINAL_CHECKPOINT else args.checkpoint  # each engine's final one
    model = model_from_folder(_model_folder(args), args.folds, checkpoint, fp32=args.disable_mixed_precision)
    with engine_output(engine_log(args.output, args.verbose), verbose=args.verbose):
        written = segment(args.input, args.spacing, model, args.output, block=args.block, step_size=args.step_size,
                          tta=not args.disable_tta, probabilities=args.save_probabilities, device=args.device,
                          scheduler=args.dask_scheduler, overwrite=args.overwrite, progress=not args.no_progress,
                          instances=args.instances, instance_halo=args.instance_halo,
                          decoding=decoding_overrides(args))
    print(f"wrote {written}")


def _model_folder(args: argparse.Namespace) -> str:
    """--model_folder, a package (-m model.zip), or the folder -t/-tr/-m/-p name on the model's engine."""
    if args.model_folder is not None:
        return args.model_folder
    if is_package(args.model):
        return args.model
    if args.task_name is None:
        raise ReIsoSegError("name the model: -t TASK [-tr TRAINER], --model_folder FOLDER or -m model.zip")
    if model_engine(args) == "v2":
        training = v2_engine_module("training")
        return str(training.model_folder(args.model, args.trainer_class_name, args.task_name,
                                         v2_plans_identifier(args.plans_identifier)))
    from reisoseg.nnunet_v1.prediction import PredictionOptions, model_folder

    return str(model_folder(args.task_name, args.trainer_class_name,
                            PredictionOptions(configuration=args.model, plans_identifier=args.plans_identifier)))
