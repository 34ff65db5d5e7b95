"""`reisoseg calibrate-instances MODEL_FOLDER`: choose a model's instance decoding on validation volumes."""
from __future__ import annotations

import argparse
from pathlib import Path

from reisoseg.devices import DEVICE_CHOICES
from reisoseg.errors import ReIsoSegError
from reisoseg.layout import FINAL_CHECKPOINT


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate-instances", help="choose a model's object decoding (seeds, sizes, scores) on validation volumes",
        description="Predict validation volumes with a model trained on an instance target and choose the decoding "
                    "settings (seed threshold, seed erosion, minimum object volume, minimum object score) that give "
                    "the best AP-75 on them (ties: F1@0.5), the instance counterpart of nnU-Net's postprocessing "
                    "determination. The choice goes into the model's instances.json, with the validation metrics "
                    "before and after; `predict --instances` and `segment --instances` use it, and their flags "
                    "override it. Never pass test volumes: what is chosen on them no longer measures anything.")
    parser.add_argument("model_folder", help="trained model folder of either engine (v1: TRAINER__PLANS, v2: "
                                             "TRAINER__PLANS__CONFIGURATION)")
    parser.add_argument("--images", default=None,
                        help="folder of validation image volumes (EM formats, or CASE_0000.nii.gz); default: each "
                             "fold's own validation cases (a task with an instance target keeps their objects)")
    parser.add_argument("--references", default=None,
                        help="folder of their object id volumes, named as the images (CASE.EXT)")
    parser.add_argument("-f", "--folds", nargs="+", default=None, help="folds to ensemble (default: every fold)")
    parser.add_argument("-chk", "--checkpoint", default=None,
                        help=f"checkpoint (default: the final one: {FINAL_CHECKPOINT} on nnU-Net v1, "
                             f"checkpoint_final.pth on v2)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), default=None,
                        help="voxel size in nm for volumes that carry none")
    parser.add_argument("--tta", action="store_true", help="predict with mirroring, as predictions will if they use it")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default=None,
                        help="device (default: cuda if available, else mps, else cpu)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from reisoseg.engines import fold_validation_files, model_from_folder
    from reisoseg.inference.calibration import folder_pairs, predicted_cases, read_pairs
    from reisoseg.instances.calibration import calibrate, store_calibration, uncalibrated_settings
    from reisoseg.instances.target import model_instance_settings

    folder = Path(args.model_folder)
    if model_instance_settings(folder) is None:
        raise ReIsoSegError(f"{folder}: no instances.json: this model was trained without an instance target, so "
                            f"there is no object decoding to calibrate")
    if (args.images is None) != (args.references is None):
        raise ReIsoSegError("pass --images and --references together")
    model = model_from_folder(folder, args.folds, args.checkpoint)
    options = {"tta": args.tta, "device": args.device}
    if args.images is not None:  # the given volumes, predicted by the ensemble of the folds
        cases = predicted_cases(model, read_pairs(folder_pairs(args.images, args.references), args.spacing),
                                **options)
    elif all(str(fold) == "all" for fold in model.folds):
        print(f"{folder}: fold all has no validation cases: the decoding keeps its settings; pass --images and "
              f"--references to calibrate on volumes of your own")
        return
    else:  # each cross-validation fold predicts the cases it was validated on, as nnU-Net's postprocessing does
        cases = []
        for fold in (str(f) for f in model.folds if str(f) != "all"):
            cases += predicted_cases(model_from_folder(folder, [fold], args.checkpoint),
                                     read_pairs(fold_validation_files(folder, fold), args.spacing), **options)
    calibration = calibrate(cases, uncalibrated_settings(folder))
    path = store_calibration(folder, calibration)
    chosen, before, after = calibration.record()["chosen"], calibration.before, calibration.after
    print(f"calibrated on {len(cases)} validation volumes ({calibration.points} settings): "
          + ", ".join(f"{key} {value:g}" for key, value in chosen.items()))
    print(f"validation AP-75 {before['ap_75']:.3f} -> {after['ap_75']:.3f}, F1@0.5 {before['f1_50']:.3f} -> "
          f"{after['f1_50']:.3f}, false objects {before['false_objects']:g} -> {after['false_objects']:g} per volume "
          f"-> {path}")
