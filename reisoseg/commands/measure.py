"""`reisoseg measure LABELS`: one CSV row per object, in physical units, block by block (any volume size)."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from reisoseg.errors import ReIsoSegError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "measure", help="measure each object of an instance label volume (CSV: volume, surface, size, ...)",
        description="Measure every object (nonzero id) of an instance label volume in any format reisoseg reads "
                    "(e.g. the OME-Zarr of `reisoseg segment --instances`, read block by block, so volumes larger "
                    "than memory work): id, volume (µm³), surface area (µm², marching cubes), bounding box "
                    "(voxels, end exclusive), centroid (nm), sections spanned, major axis length (nm) and score. "
                    "Prints a summary (count, volume distribution) and writes it beside the CSV as JSON.")
    parser.add_argument("labels", help="instance labels: seg.zarr, file.h5:/key, stack.tif, case.nii.gz, ...")
    parser.add_argument("-o", "--output", default=None,
                        help="CSV to write (default: LABELS_objects.csv beside the labels)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), default=None,
                        help="voxel size in nm when the file carries none (must agree when it does)")
    parser.add_argument("--probabilities", default=None,
                        help="class probabilities (classes, z, y, x), e.g. seg.zarr/probabilities: score = mean "
                             "foreground probability (default: the scores stored with the labels, if any)")
    parser.add_argument("--block", type=int, nargs=3, metavar=("Z", "Y", "X"), default=(64, 512, 512),
                        help="voxels read at once; memory grows with it (default: 64 512 512)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    parser.add_argument("--no_progress", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)


def _open_probabilities(path: str, shape: tuple[int, ...]):
    from reisoseg.io.volume import split_key

    file, key = split_key(path)
    try:
        if key is not None and file.lower().endswith((".h5", ".hdf5", ".hdf")):
            import h5py

            array = h5py.File(file, "r")[key]
        else:
            import zarr

            array = zarr.open_array(path if key is None else f"{file}/{key}", mode="r")
    except (OSError, KeyError, ValueError, FileNotFoundError) as error:
        raise ReIsoSegError(f"{path}: cannot open probabilities ({error})") from error
    if array.ndim != 4 or tuple(array.shape[1:]) != tuple(shape):
        raise ReIsoSegError(f"{path}: probabilities must be (classes, z, y, x) with z, y, x = {list(shape)}, got "
                            f"{list(array.shape)}")
    return array


def run(args: argparse.Namespace) -> dict:
    from reisoseg.console import progress_bar
    from reisoseg.inference.tiles import block_indices
    from reisoseg.instances.measure import measure_objects, summary_path, write_measurements
    from reisoseg.instances.scores import read_scores
    from reisoseg.io.validation import resolve_spacing
    from reisoseg.io.volume import open_volume, split_key, volume_stem

    volume = open_volume(args.labels)
    spacing = resolve_spacing(volume.source, volume.spacing, args.spacing)
    if np.dtype(volume.data.dtype).kind not in "iu":
        raise ReIsoSegError(f"{volume.source}: labels must be integer object ids, got dtype {volume.data.dtype}")
    if min(args.block) < 1:
        raise ReIsoSegError(f"--block must be three positive integers, got {list(args.block)}")
    labels_path = Path(split_key(args.labels)[0])
    output = Path(args.output) if args.output else labels_path.with_name(f"{volume_stem(labels_path)}_objects.csv")
    if output.exists() and not args.overwrite:
        raise ReIsoSegError(f"{output}: already exists (pass --overwrite to replace it)")
    if output.resolve() == labels_path.resolve():
        raise ReIsoSegError(f"{output}: the CSV would replace the labels; choose another name")
    probabilities = _open_probabilities(args.probabilities, volume.shape) if args.probabilities else None
    blocks = len(block_indices(volume.shape, args.block))
    with progress_bar(blocks, "measuring", "block", enabled=not args.no_progress) as bar:
        rows = measure_objects(volume.data, spacing, probabilities=probabilities,
                               scores=None if probabilities is not None else read_scores(args.labels),
                               block=args.block, progress=bar.update)
    summary = write_measurements(rows, output)
    print("  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items()))
    print(f"wrote {output} and {summary_path(output)}")
    return summary
