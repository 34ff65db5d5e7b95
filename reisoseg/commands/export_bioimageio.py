"""`reisoseg export-bioimageio`: a trained ReIsoSeg model as a BioImage.IO package (the bioimageio extra)."""
from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from reisoseg.engines import folder_engine, v2_engine_module
from reisoseg.errors import ReIsoSegError
from reisoseg.extras import extra_module
from reisoseg.instances.target import model_instance_settings
from reisoseg.layout import FINAL_CHECKPOINT


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export-bioimageio", help="export a trained ReIsoSeg model as a BioImage.IO package (ilastik, deepImageJ)",
        description="Write a BioImage.IO model package (spec 0.5.12; TorchScript and a state dict of "
                    "reisoseg.network.ReIsoSegRMV6) of one fold of a trained model folder (nnU-Net v1: "
                    "TRAINER__PLANS, v2: TRAINER__PLANS__CONFIGURATION). It holds the inference branch, "
                    "z-score normalisation and softmax; inputs must have the planned spacing. Needs "
                    "pip install 'reisoseg[bioimageio]'.")
    parser.add_argument("model_folder", help="trained model folder (fold_*/ or all/ inside)")
    parser.add_argument("-o", "--output", required=True, help="the package to write, e.g. model.zip")
    parser.add_argument("-f", "--fold", default=None,
                        help="the fold to export (default: all if trained, else 0)")
    parser.add_argument("-chk", "--checkpoint", default=None,
                        help="checkpoint (default: the final one: model_final_checkpoint on v1, checkpoint_final.pth "
                             "on v2)")
    parser.add_argument("--name", default=None, help="the model's name (default: ReIsoSeg TASK fold F)")
    parser.add_argument("--authors", nargs="+", default=None,
                        help="authors' names (default: this machine's user name)")
    parser.add_argument("--cite", nargs="+", default=(), metavar="DOI",
                        help="DOIs to cite besides the method's (your data, your paper)")
    parser.add_argument("--license", default="CC-BY-4.0", help="SPDX licence of the weights (default: %(default)s)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    folder = Path(args.model_folder)
    if not folder.is_dir():
        raise ReIsoSegError(f"{folder}: no such model folder")
    export = extra_module("reisoseg.bioimageio.export", "bioimageio", "export-bioimageio")
    fold = args.fold or ("all" if (folder / "all").is_dir() else "0")
    if folder_engine(folder) == "v2":
        prediction = v2_engine_module("prediction")
        trained = prediction.trained_network(folder, fold, args.checkpoint or prediction.V2PredictionOptions.checkpoint)
    else:
        from reisoseg.nnunet_v1.model_files import trained_network

        trained = trained_network(folder, fold, args.checkpoint or FINAL_CHECKPOINT)
    task = folder.parent.name
    info = export.PackageInfo(
        name=args.name or f"ReIsoSeg {task} fold {fold}", authors=args.authors or [getpass.getuser()],
        source=f"{task}, {folder.name}, fold {fold}", cite=args.cite, license=args.license,
        instance_settings=model_instance_settings(folder))
    print(f"wrote {export.export_package(trained, args.output, info)}")
