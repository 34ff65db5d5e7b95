"""Blockwise segmentation (`reisoseg.segment`): peak memory against volume size, and speed against nnU-Net v1's
in-memory predictor, with the same model, block size and sliding-window settings, measured in one run.

Targets: peak RSS ratio (largest / smallest volume) <= 1.2 and under 4 GiB; blockwise voxels/s within
10 % of nnU-Net's in-memory predictor on the smallest volume. The default sizes are the issue's, 0.1 and 1 Gvoxel;
on a 2-core CPU the network alone needs about 2 hours per Gvoxel, so there use `--sizes 0.01 0.1` (same 10x ratio).

Each measurement runs in a fresh process (peak RSS is per process). The model is a ReIsoSegTrainer trained for a few
iterations on a synthetic task (speed and memory do not depend on its weights); volumes are tiled from one synthetic
EM volume. Writes benchmarks/results/bench_blockwise.json.

    python benchmarks/bench_blockwise.py [--sizes 0.1 1] [--block 96 512 512] [--step_size 1] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

from reisoseg.layout import DEFAULT_CONFIGURATION, DEFAULT_TRAINER, checkpoint_file, fold_folder, model_folder

sys.path.insert(0, str(Path(__file__).parent))
import workspace  # noqa: E402

TASK_ID, TASK_NAME = 503, "BenchBlockwise"
PLANS = "nnUNetPlans_bench_blockwise"
PATCH = (16, 64, 64)
SECTIONS = workspace.TILED_SECTIONS


def _model(work: Path) -> Path:
    from reisoseg.nnunet_v1.plans import write_derived_plans
    from reisoseg.nnunet_v1.training import run_training
    from reisoseg.nnunet_v1.training_options import TrainingOptions

    workspace.use_folders(work)
    task = workspace.synthetic_task(TASK_ID, TASK_NAME, ratio=8, shape=(16, 96, 96), num_training=5, num_test=1)
    write_derived_plans(task, PLANS, patch_size=PATCH, batch_size=2)
    folder = model_folder(os.environ["RESULTS_FOLDER"], task, DEFAULT_TRAINER, PLANS)
    if not checkpoint_file(fold_folder(folder, "all")).is_file():
        run_training(DEFAULT_CONFIGURATION, DEFAULT_TRAINER, task, "all",
                     TrainingOptions(plans_identifier=PLANS, epochs=1, iterations_per_epoch=2,
                                     val_iterations_per_epoch=1, run_validation=False, device="cpu"))
    return folder


def _measure_segment(args: argparse.Namespace) -> dict:
    import reisoseg

    start = time.perf_counter()
    with workspace.PeakMemory() as memory:
        reisoseg.segment(args.input, model=args.model, output=args.output, folds=["all"], block=args.block,
                         step_size=args.step_size, tta=False, device="cpu", overwrite=True, progress=False)
    return {"wall_s": time.perf_counter() - start, "peak_rss_gib": memory.peak_gib}


def _measure_in_memory(args: argparse.Namespace) -> dict:
    from reisoseg.nnunet_v1.prediction import PredictionOptions, predict_folder

    start = time.perf_counter()
    with workspace.PeakMemory() as memory:
        predict_folder(args.input, args.output, args.task, DEFAULT_TRAINER,
                       PredictionOptions(plans_identifier=PLANS, folds=["all"], disable_tta=True, device="cpu",
                                         step_size=args.step_size, overwrite_existing=True))
    return {"wall_s": time.perf_counter() - start, "peak_rss_gib": memory.peak_gib}


def in_fresh_process(script: str, kind: str, *arguments: str, **options) -> dict:
    """Run `script ARGUMENTS --measure KIND --OPTION VALUE ...` in a new process (peak RSS is per process) on CPU;
    returns the JSON it prints last."""
    command = [sys.executable, script, *arguments, "--measure", kind]
    for key, value in options.items():
        command += [f"--{key}", *([str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)])]
    result = subprocess.run(command, capture_output=True, text=True)  # the measurements pass device="cpu"
    if result.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def add_volume_options(parser: argparse.ArgumentParser, *, sizes: list[float], block_xy: int, work: Path,
                       kinds: tuple[str, ...]) -> None:
    """The options of a blockwise measurement over tiled volumes, and the hidden ones of its fresh processes."""
    parser.add_argument("--sizes", type=float, nargs="+", default=sizes, help="volume sizes in Gvoxel")
    parser.add_argument("--block", type=int, nargs=3, default=[SECTIONS, block_xy, block_xy], help="block (z y x)")
    parser.add_argument("--step_size", type=float, default=1.0, help="sliding-window step (default: 1, no overlap)")
    parser.add_argument("--work", type=Path, default=work, help="work folder (default: %(default)s)")
    parser.add_argument("--measure", choices=kinds, help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_volume_options(parser, sizes=[0.1, 1.0], block_xy=512, work=Path("/tmp/reisoseg_bench_blockwise"),
                       kinds=("segment", "in_memory"))
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--task", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.work = args.work.resolve()
    if args.measure:
        workspace.use_folders(args.work)
        measure = _measure_segment if args.measure == "segment" else _measure_in_memory
        print(json.dumps(measure(args)))
        return

    args.work.mkdir(parents=True, exist_ok=True)
    model = _model(args.work)
    task = model.parent.name
    rows = []
    for size in sorted(args.sizes):
        shape = workspace.tiled_volume_shape(size)
        volume = args.work / f"volume_{shape[1]}.zarr"
        workspace.write_tiled_volume(volume, shape)
        print(f"blockwise {shape} ({math.prod(shape) / 1e9:.3f} Gvoxel) ...", flush=True)
        measured = in_fresh_process(__file__, "segment", work=args.work, input=volume,
                                    output=args.work / "segmentation.zarr", model=model, block=args.block,
                                    step_size=args.step_size)
        rows.append({"method": "reisoseg.segment (blockwise)", "shape": shape, "voxels": math.prod(shape),
                     **measured})
    smallest = workspace.tiled_volume_shape(min(args.sizes))
    cases = args.work / "in_memory_input"
    if not (cases / "case_0000.nii.gz").is_file():
        from reisoseg.io.nifti import write_nifti
        from reisoseg.io.volume import open_volume

        cases.mkdir(exist_ok=True)
        write_nifti(cases / "case_0000.nii.gz", open_volume(args.work / f"volume_{smallest[1]}.zarr").read(),
                    (40.0, 5.0, 5.0))
    print(f"nnU-Net in-memory {smallest} ...", flush=True)
    measured = in_fresh_process(__file__, "in_memory", work=args.work, input=cases,
                                output=args.work / "in_memory_output", task=task, step_size=args.step_size)
    rows.append({"method": "nnU-Net v1 predict_from_folder (in memory)", "shape": smallest,
                 "voxels": math.prod(smallest), **measured})
    for row in rows:
        row["voxels_per_s"] = row["voxels"] / row["wall_s"]

    blockwise = [r for r in rows if r["method"].startswith("reisoseg")]
    in_memory = rows[-1]
    rss_ratio = blockwise[-1]["peak_rss_gib"] / blockwise[0]["peak_rss_gib"]
    speed_ratio = blockwise[0]["voxels_per_s"] / in_memory["voxels_per_s"]
    print(f"\n{'method':44s} {'shape':>18s} {'Gvoxel':>7s} {'wall s':>8s} {'voxels/s':>10s} {'peak RSS GiB':>12s}")
    for row in rows:
        print(f"{row['method']:44s} {str(tuple(row['shape'])):>18s} {row['voxels'] / 1e9:7.3f} {row['wall_s']:8.1f} "
              f"{row['voxels_per_s']:10.3g} {row['peak_rss_gib']:12.2f}")
    print(f"\npeak RSS ratio, largest / smallest volume: {rss_ratio:.2f} (target <= 1.2; "
          f"max {max(r['peak_rss_gib'] for r in blockwise):.2f} GiB, target < 4)")
    print(f"voxels/s blockwise / nnU-Net in memory on {tuple(smallest)}: {speed_ratio:.2f} (target >= 0.9)")
    results = Path(__file__).parent / "results" / "bench_blockwise.json"
    results.write_text(json.dumps({"machine": workspace.machine(), "revision": workspace.git_revision(),
                                   "block": args.block, "step_size": args.step_size, "patch": PATCH, "tta": False,
                                   "rows": rows, "peak_rss_ratio": rss_ratio,
                                   "speed_ratio_vs_in_memory": speed_ratio}, indent=1, default=str))
    print(f"-> {results}")


if __name__ == "__main__":
    main()
