"""`reisoseg convert`: EM volumes (TIFF, sections, HDF5, zarr, NIfTI) -> an nnU-Net v1 or v2 raw task."""
from __future__ import annotations

import argparse

from reisoseg.commands.options import add_task_output_options, raw_data_base
from reisoseg.errors import ReIsoSegError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert EM volumes and labels into an nnU-Net raw task (v1 or v2)",
        description="Read image and label volumes (multipage TIFF, folder of TIFF/PNG sections, file.h5:/key, "
                    "zarr/OME-Zarr, NIfTI/MHA), validate them, and write nnUNet_raw_data/TaskXXX_Name (v1) or "
                    "DatasetXXX_Name (--engine v2) with NIfTI files in (z, y, x) order with their spacing and "
                    "dataset.json. Nothing is written if any input is bad. Example: reisoseg convert --image raw/ "
                    "--labels labels/ --spacing 50 4.6 4.6 --label-map mitochondria=191 --task 502 --name "
                    "GerhardMito --test-sections 16-19")
    parser.add_argument("--image", dest="images", nargs="+", required=True, help="image volume(s)")
    parser.add_argument("--labels", nargs="+", required=True, help="label volume(s), one per image, same shape")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), default=None,
                        help="voxel size in nm, z first; required when the files carry none, and must agree with "
                             "their metadata when they do")
    classes = parser.add_mutually_exclusive_group(required=True)
    classes.add_argument("--label-map", "--label_map", nargs="+", metavar="NAME=VALUE[,VALUE]",
                         help="classes from source label values, e.g. mitochondria=191; other values become "
                              "background")
    classes.add_argument("--classes", nargs="+", metavar="NAME",
                         help="labels are already 0..K: names of classes 1..K (other values are an error)")
    parser.add_argument("--task", type=int, required=True, help="task id (1-999)")
    parser.add_argument("--name", required=True, help="task name (letters, digits, _)")
    parser.add_argument("--test-sections", "--test_sections", default=None, metavar="FIRST-LAST",
                        help="0-based sections of every volume held out as test cases, e.g. 16-19")
    parser.add_argument("--test-volumes", "--test_volumes", type=int, nargs="+", default=(), metavar="I",
                        help="0-based indices of volumes held out whole as test cases")
    parser.add_argument("--instances", dest="instance_class", default=None, metavar="CLASS",
                        help="train CLASS as separate objects (interior / boundary target, for `predict/segment "
                             "--instances`); without --instance-labels its objects are the 3D connected components "
                             "of the class, so touching objects stay merged (a warning says so)")
    parser.add_argument("--instance-labels", "--instance_labels", action="store_true",
                        help="the label files hold object ids (0 background, every other value one object of the "
                             "--instances class) instead of classes; --label-map/--classes then only names it")
    parser.add_argument("--annotated-sections", "--annotated_sections", default=None, metavar="LIST",
                        help="sparse annotation: only these 0-based sections of every volume are labelled, e.g. "
                             "0,5,10-12; all others get the label `ignore`, which training leaves out (test "
                             "sections must be among them)")
    parser.add_argument("--ignore-value", "--ignore_value", type=int, default=None, metavar="V",
                        help="sparse annotation: source label value V marks unlabelled voxels (label `ignore`)")
    parser.add_argument("--modality", default="EM",
                        help="dataset.json modality (default: EM, i.e. per-image z-score normalisation)")
    add_task_output_options(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> None:
    from reisoseg.io.convert import LabelMapping, convert_to_task, parse_section_list, parse_sections

    raw = raw_data_base(args)
    if not args.name.replace("_", "").isalnum():
        raise ReIsoSegError(f"--name {args.name!r}: use letters, digits and _ only")
    mapping = LabelMapping.parse(args.label_map) if args.label_map else LabelMapping.identity(args.classes)
    folder = convert_to_task(args.images, args.labels, task_id=args.task, name=args.name, mapping=mapping,
                             spacing=args.spacing, test_sections=parse_sections(args.test_sections),
                             test_volumes=args.test_volumes, raw_data_base=raw, modality=args.modality,
                             overwrite=args.overwrite, instance_class=args.instance_class,
                             instance_labels=args.instance_labels,
                             annotated_sections=parse_section_list(args.annotated_sections),
                             ignore_value=args.ignore_value, engine=args.engine)
    print(f"done: {folder}")
