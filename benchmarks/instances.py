"""What objects cost: blockwise `segment --instances` against semantic-only `segment`, wall time and peak memory.

Targets (issue #10): instance segmentation costs <= 1.3x the wall time of semantic segmentation, and its peak memory
does not grow with the volume. Both runs use the same model, volume, blocks and sliding-window settings, each in a
fresh process (peak RSS sampled over the process tree, `workspace.PeakMemory`). The model must be trained on an
instance target (its weights set how many objects there are to decode): by default the demo's
(`reisoseg demo` first), or any with `--model`. Volumes are tiled from one synthetic EM volume as in
bench_blockwise.py. Writes benchmarks/results/instances.json.

    python benchmarks/instances.py [--model reisoseg_demo/nnunet/results/.../ReIsoSegTrainer__nnUNetPlans_reisoseg_demo]
                                   [--sizes 0.005 0.02] [--block 32 256 256]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

from reisoseg.demo import demo_model_folder

sys.path.insert(0, str(Path(__file__).parent))
import bench_blockwise  # noqa: E402
import workspace  # noqa: E402


def _measure(args: argparse.Namespace) -> dict:
    import reisoseg

    start = time.perf_counter()
    with workspace.PeakMemory() as memory:
        reisoseg.segment(args.input, model=args.model, output=args.output, folds=["all"], block=args.block,
                         step_size=args.step_size, tta=False, device="cpu", overwrite=True, progress=False,
                         instances=args.measure == "instances")
    result = {"wall_s": time.perf_counter() - start, "peak_rss_gib": memory.peak_gib}
    if args.measure == "instances":
        import zarr

        result["objects"] = len(zarr.open_group(args.output, mode="r").attrs["reisoseg"]["scores"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=demo_model_folder(),
                        help="a model folder trained on an instance target (default: the demo's)")
    parser.add_argument("--sizes", type=float, nargs="+", default=[0.005, 0.02], help="volume sizes in Gvoxel")
    parser.add_argument("--block", type=int, nargs=3, default=[bench_blockwise.SECTIONS, 256, 256],
                        help="block (z y x)")
    parser.add_argument("--step_size", type=float, default=1.0, help="sliding-window step (default: 1)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/reisoseg_bench_instances"),
                        help="work folder for the volumes and outputs (default: %(default)s)")
    parser.add_argument("--measure", choices=("semantic", "instances"), help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(args)))
        return
    if not (args.model / "instances.json").is_file():
        raise SystemExit(f"{args.model}: not a model trained on an instance target (run `reisoseg demo` or pass "
                         f"--model)")
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in sorted(args.sizes):
        shape = bench_blockwise._volume_shape(size)
        volume = args.work / f"volume_{shape[1]}.zarr"
        bench_blockwise._write_volume(volume, shape)
        for kind in ("semantic", "instances"):
            print(f"{kind} {shape} ({math.prod(shape) / 1e9:.3f} Gvoxel) ...", flush=True)
            measured = bench_blockwise.in_fresh_process(__file__, kind, input=volume, output=args.work / f"{kind}.zarr",
                                         model=args.model.resolve(), block=args.block, step_size=args.step_size)
            rows.append({"kind": kind, "shape": shape, "voxels": math.prod(shape), **measured})
    print(f"\n{'kind':10s} {'shape':>18s} {'Gvoxel':>7s} {'wall s':>8s} {'peak RSS GiB':>12s} {'objects':>8s}")
    for row in rows:
        print(f"{row['kind']:10s} {str(tuple(row['shape'])):>18s} {row['voxels'] / 1e9:7.3f} {row['wall_s']:8.1f} "
              f"{row['peak_rss_gib']:12.2f} {row.get('objects', ''):>8}")
    ratios = {}
    for size in sorted({r["voxels"] for r in rows}):
        semantic, instances = (next(r for r in rows if r["voxels"] == size and r["kind"] == k)
                               for k in ("semantic", "instances"))
        ratios[size] = instances["wall_s"] / semantic["wall_s"]
        print(f"wall time instances / semantic at {size / 1e9:.3f} Gvoxel: {ratios[size]:.2f} (target <= 1.3)")
    peaks = [r["peak_rss_gib"] for r in rows if r["kind"] == "instances"]
    print(f"peak RSS of instance runs, largest / smallest volume: {peaks[-1] / peaks[0]:.2f} "
          f"(memory does not grow with the volume: ~1)")
    results = Path(__file__).parent / "results" / "instances.json"
    results.write_text(json.dumps({"machine": workspace.machine(), "revision": workspace.git_revision(),
                                   "block": args.block, "step_size": args.step_size, "tta": False, "rows": rows,
                                   "wall_ratio_instances_over_semantic": {str(k): v for k, v in ratios.items()},
                                   "peak_rss_ratio_instances": peaks[-1] / peaks[0]}, indent=1))
    print(f"-> {results}")


if __name__ == "__main__":
    main()
