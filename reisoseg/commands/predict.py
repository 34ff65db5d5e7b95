"""`reisoseg predict`: nnUNet_predict's flags, with our trainers found and model files loaded safely."""
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
from reisoseg.console import engine_output
from reisoseg.engines import is_package, v2_engine_module
from reisoseg.errors import ReIsoSegError
from reisoseg.io.nnunet_task import ENGINES, is_nnunet_folder
from reisoseg.layout import FINAL_CHECKPOINT, v2_plans_identifier


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict", help="predict a folder of NIfTI cases with a trained model",
        description="Predict with the model trained by TRAINER on TASK, ensembling the given folds. Input: a folder "
                    "in nnU-Net naming (CASE_0000.nii.gz), or EM volumes: a multipage TIFF, a folder of TIFF/PNG "
                    "sections, file.h5:/key, zarr/OME-Zarr, NIfTI, or a folder of such volumes; their "
                    "segmentations are written in the input's format (zarr in: OME-Zarr labels out). ReIsoSeg "
                    "models run their plain branch only.")
    parser.add_argument("-i", "--input_folder", required=True,
                        help="nnU-Net case folder, an EM volume, or a folder of EM volumes")
    parser.add_argument("-o", "--output_folder", required=True,
                        help="output folder (created); for one EM volume also a file name such as seg.tif")
    parser.add_argument("--output_format", choices=("tiff", "hdf5", "zarr", "nifti"), default=None,
                        help="EM input: write segmentations in this format (default: the input's)")
    add_model_options(parser)
    parser.add_argument("-z", "--save_npz", action="store_true", help="also save softmax probabilities (.npz)")
    parser.add_argument("--overwrite_existing", action="store_true",
                        help="predict cases whose output already exists (default: skip them)")
    parser.add_argument("--num_threads_preprocessing", type=int, default=1,
                        help="preprocessing processes (default: %(default)s)")
    parser.add_argument("--num_threads_nifti_save", type=int, default=1,
                        help="export processes (default: %(default)s)")
    parser.add_argument("--disable_postprocessing", action="store_true",
                        help="do not apply the postprocessing found during validation")
    parser.add_argument("--instances", action="store_true",
                        help="also write separate objects (uint32 ids, one per mitochondrion; model trained on an "
                             "instance target): OUT/instances/CASE.nii.gz for case folders, NAME_instances.EXT "
                             "beside each EM output, each with NAME.scores.json (mean foreground probability)")
    add_decoding_options(parser)
    parser.add_argument("--engine", choices=ENGINES, default=None, help=ENGINE_HELP)
    add_output_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from reisoseg.inference.cases import predict_volumes, read_em_volumes

    if is_package(args.model):
        predict_cases = _package_case_predictor(args)
    elif args.task_name is None:
        raise ReIsoSegError("name the model: -t TASK [-tr TRAINER] or -m model.zip")
    else:
        predict_cases = _v2_case_predictor(args) if model_engine(args) == "v2" else _v1_case_predictor(args)
    cases = is_nnunet_folder(args.input_folder)
    volumes = None if cases else read_em_volumes(args.input_folder, args.output_folder, spacing=args.spacing,
                                                 output_format=args.output_format)  # checked before any output
    with engine_output(engine_log(args.output_folder, args.verbose), verbose=args.verbose):
        if cases:
            written = [predict_cases(args.input_folder, args.output_folder)]
        else:
            written = predict_volumes(volumes, predict_cases, instances=args.instances)
    for path in written:
        print(f"wrote {path}")


def _package_case_predictor(args: argparse.Namespace):
    """A BioImage.IO package's network, block by block over each case (no engine)."""
    from reisoseg.engines import model_from_folder
    from reisoseg.inference.cases import blockwise_case_predictor

    return blockwise_case_predictor(model_from_folder(args.model), instances=args.instances,
                                    tta=not args.disable_tta, step_size=args.step_size, device=args.device,
                                    decoding=decoding_overrides(args), progress=False)


def _v1_case_predictor(args: argparse.Namespace):
    from reisoseg.nnunet_v1.prediction import PredictionOptions, predict_folder

    options = PredictionOptions(
        configuration=args.model, plans_identifier=args.plans_identifier, folds=args.folds,
        checkpoint=args.checkpoint, save_npz=args.save_npz, disable_tta=args.disable_tta, step_size=args.step_size,
        overwrite_existing=args.overwrite_existing, num_threads_preprocessing=args.num_threads_preprocessing,
        num_threads_nifti_save=args.num_threads_nifti_save, disable_postprocessing=args.disable_postprocessing,
        fp32=args.disable_mixed_precision, device=args.device, instances=args.instances,
        decoding=decoding_overrides(args), progress=not args.no_progress)
    return lambda cases, output: predict_folder(cases, output, args.task_name, args.trainer_class_name, options)


def _v2_case_predictor(args: argparse.Namespace):
    """v2's predictor for the same flags; what it cannot do is refused before any work."""
    if args.disable_mixed_precision:
        raise ReIsoSegError("--disable_mixed_precision: not on the nnU-Net v2 engine (its predictor always uses "
                            "mixed precision on CUDA)")
    prediction = v2_engine_module("prediction")
    defaults = prediction.V2PredictionOptions
    options = defaults(
        configuration=args.model, plans_identifier=v2_plans_identifier(args.plans_identifier),
        folds=args.folds, checkpoint=defaults.checkpoint if args.checkpoint == FINAL_CHECKPOINT else args.checkpoint,
        step_size=args.step_size, disable_tta=args.disable_tta, device=args.device,
        overwrite_existing=args.overwrite_existing, save_probabilities=args.save_npz, instances=args.instances,
        decoding=decoding_overrides(args), progress=not args.no_progress)
    return lambda cases, output: prediction.predict_folder(cases, output, args.task_name, args.trainer_class_name,
                                                           options)
