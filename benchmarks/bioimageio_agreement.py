"""A model exported to BioImage.IO against the model folder it came from, on the demo's held-out volumes.

For a finished `reisoseg demo` (its model trained on the instance target), this exports the model with
`reisoseg export-bioimageio`, then segments each test volume three ways:
- `reisoseg predict` with the results folder (nnU-Net v1's sliding window, no TTA): the reference;
- bioimageio.core's own prediction of the package (its tiling, its z-score per volume, softmax), labels by argmax,
  once per block size parameter n (blocks of min + n * step, the declared halo cropped);
- `reisoseg segment -m model.zip` (our blockwise window arithmetic on the package's state dict, no TTA), at nnU-Net's
  step of half a patch and at a quarter patch: how far the model's labels move under nnU-Net's own tiling.
Labels are folded to mitochondria (interior + boundary) and compared with the reference by Dice, and all three
with the generator's truth. One record per run in benchmarks/results/bioimageio_agreement.json.

    python benchmarks/bioimageio_agreement.py --demo reisoseg_demo
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import workspace  # noqa: E402

from reisoseg.instances.target import model_instance_settings  # noqa: E402
from reisoseg.io.nifti import read_nifti  # noqa: E402
from reisoseg.io.volume import open_volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "benchmarks" / "results" / "bioimageio_agreement.json"
TASK = "Task500_SynthDemo"


def dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def reisoseg_command(*arguments: str) -> None:
    result = subprocess.run([sys.executable, "-m", "reisoseg.commands.main", *arguments], capture_output=True,
                            text=True)
    if result.returncode != 0:
        raise SystemExit(f"reisoseg {arguments[0]} failed: {result.stderr[-2000:]}")


def bioimageio_labels(package: Path, image: np.ndarray, blocksize: int) -> np.ndarray:
    """bioimageio.core's prediction of the whole volume, tiled by the package's parameterised sizes."""
    from bioimageio.core import predict
    from bioimageio.spec.model.v0_5 import AxisId, TensorId

    # one parameter per axis: bioimageio.core replaces a plain 0 (falsy) by its default of 10
    per_axis = {(TensorId("raw"), AxisId(axis)): blocksize for axis in "zyx"}
    sample = predict(model=str(package), inputs={TensorId("raw"): image[None, None].astype(np.float32)},
                     blocksize_parameter=per_axis)
    probabilities = np.asarray(sample.members[TensorId("probabilities")].data)[0]
    return probabilities.argmax(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", type=Path, default=Path("reisoseg_demo"), help="a finished `reisoseg demo` folder")
    parser.add_argument("--blocksizes", type=int, nargs="+", default=[0, 2, 4],
                        help="bioimageio.core's block size parameters n to run, each a block of min + n * step "
                             "per axis, the halo included (default: 0 2 4; 0 is the training patch)")
    args = parser.parse_args()
    folders = workspace.use_folders(args.demo.resolve())
    model = next((folders["RESULTS_FOLDER"] / "nnUNet" / "3d_fullres" / TASK).glob("ReIsoSegTrainer__*"), None)
    if model is None:
        raise SystemExit(f"{args.demo}: no trained demo model; run `reisoseg demo --output {args.demo}` first")
    settings = model_instance_settings(model)
    images = folders["nnUNet_raw_data_base"] / "nnUNet_raw_data" / TASK / "imagesTs"
    labels = folders["nnUNet_raw_data_base"] / "nnUNet_raw_data" / TASK / "labelsTs"
    records = []
    with tempfile.TemporaryDirectory(prefix="reisoseg_bioimageio_") as scratch:
        scratch = Path(scratch)
        package = scratch / "model.zip"
        reisoseg_command("export-bioimageio", str(model), "-o", str(package), "-f", "all", "--authors", "benchmark")
        reisoseg_command("predict", "-i", str(images), "-o", str(scratch / "folder"), "-t", TASK, "-f", "all",
                         "-p", model.name.split("__", 1)[1], "--disable_tta", "--device", "cpu")
        for image_file in sorted(images.glob("*_0000.nii.gz")):
            case = image_file.name[:-len("_0000.nii.gz")]
            image, spacing = read_nifti(image_file)
            truth = read_nifti(labels / f"{case}.nii.gz")[0] == settings.instance_class
            reference = settings.semantic(read_nifti(scratch / "folder" / f"{case}.nii.gz")[0]) \
                == settings.instance_class
            outputs, seconds = {}, {}
            for blocksize in args.blocksizes:
                started = time.perf_counter()
                outputs[f"bioimageio_core_n{blocksize}"] = settings.semantic(
                    bioimageio_labels(package, image, blocksize)) == settings.instance_class
                seconds[f"bioimageio_core_n{blocksize}"] = time.perf_counter() - started
            for way, step_size in (("segment_package", 0.5), ("segment_package_step0.25", 0.25)):
                started = time.perf_counter()
                reisoseg_command("segment", "-i", str(image_file), "-o", str(scratch / f"{case}_{way}.zarr"), "-m",
                                 str(package), "--disable_tta", "--device", "cpu", "--no_progress", "--step_size",
                                 str(step_size))
                seconds[way] = time.perf_counter() - started
                outputs[way] = open_volume(scratch / f"{case}_{way}.zarr").read() == settings.instance_class
            records.append({
                "case": case, "shape": list(image.shape), "spacing_nm": list(spacing),
                "dice_to_folder": {way: dice(volume, reference) for way, volume in outputs.items()},
                "dice_to_truth": {"folder": dice(reference, truth),
                                  **{way: dice(volume, truth) for way, volume in outputs.items()}},
                "seconds": seconds})
            print(json.dumps(records[-1]), flush=True)
    RECORD.parent.mkdir(parents=True, exist_ok=True)
    RECORD.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "machine": workspace.machine(),
                                  "revision": workspace.git_revision(), "demo": str(args.demo),
                                  "blocksize_parameters": args.blocksizes, "cases": records}, indent=1))
    print(f"-> {RECORD}")


if __name__ == "__main__":
    main()
