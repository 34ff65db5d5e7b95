"""One table of speed and memory ratios, measured in one run: ReIsoSeg's inference forward (PI branch skipped)
against the full forward the reference computes, and ReIsoSeg against nnU-Net v1's default Generic_UNet for the
eval forward, a training step and sliding-window prediction of the same volume.

Both networks for data of the given z/xy ratio (default 4: 20 x 5 x 5 nm, ReIsoSeg pattern [1, 2, 2]; Generic_UNet
pools planned by nnU-Net's rule for that spacing and patch), 1 input channel, 2 classes, at the given patch
(default 16 x 128 x 128). Each measurement runs in a fresh process so that its peak memory is its own (resident
memory on CPU, CUDA's peak allocation on a GPU); times are medians of --repeats (sliding window: one run over a
volume twice the patch along every axis, 27 windows at step 0.5, Gaussian weighting, no mirroring, nnU-Net's
`predict_3D`). On CUDA the training step runs in fp16 autocast with a GradScaler, as nnU-Net trains there. Writes
benchmarks/results/speed.json (or --output).

    python benchmarks/speed.py [--threads 2] [--repeats 5] [--device cpu] [--ratio 4] [--patch 16 128 128]
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

from reisoseg.network.anisotropy import ani_scale_from_spacing

sys.path.insert(0, str(Path(__file__).parent))
import workspace  # noqa: E402

PIXEL_NM = 5.0
MEASUREMENTS = {
    "eval_reisoseg_plain": "ReIsoSeg eval forward, PI branch skipped (ours), batch 1",
    "eval_reisoseg_full": "ReIsoSeg eval forward computing every head (reference), batch 1",
    "eval_generic_unet": "Generic_UNet eval forward, batch 1",
    "train_reisoseg": "ReIsoSeg training step (both branches), batch 2",
    "train_generic_unet": "Generic_UNet training step, batch 2",
    "window_reisoseg": "ReIsoSeg sliding-window prediction of the volume",
    "window_generic_unet": "Generic_UNet sliding-window prediction of the volume",
}
RATIOS = [
    ("eval: PI skipped / full forward", "eval_reisoseg_plain", "eval_reisoseg_full"),
    ("eval forward: ReIsoSeg / Generic_UNet", "eval_reisoseg_plain", "eval_generic_unet"),
    ("training step: ReIsoSeg / Generic_UNet", "train_reisoseg", "train_generic_unet"),
    ("sliding window: ReIsoSeg / Generic_UNet", "window_reisoseg", "window_generic_unet"),
]


def spacing_for(ratio: int) -> tuple[float, float, float]:
    return (ratio * PIXEL_NM, PIXEL_NM, PIXEL_NM)


def volume_for(patch: tuple[int, int, int]) -> tuple[int, int, int]:
    """The sliding-window volume: twice the patch along every axis (27 windows at step 0.5)."""
    return tuple(2 * size for size in patch)  # type: ignore[return-value]


def _network(name: str, ratio: int, patch: tuple[int, int, int]):
    import torch
    from bench_forward import generic_unet_for

    from reisoseg.network import ReIsoSegRMV6

    torch.manual_seed(0)
    if name == "generic_unet":
        network, _ = generic_unet_for(spacing_for(ratio), patch)
        return network
    pattern = ani_scale_from_spacing(spacing_for(ratio))
    if name == "reisoseg_v1":  # the nnU-Net adapter, for predict_3D
        from reisoseg.nnunet_v1.network import ReIsoSegV1Network

        return ReIsoSegV1Network(1, 2, pattern)
    return ReIsoSegRMV6(1, 2, pattern)


def _measure(kind: str, repeats: int, device, ratio: int, patch: tuple[int, int, int]) -> float:
    """Seconds for one measurement (median of `repeats` where it repeats) on `device`."""
    import numpy as np
    import torch
    from bench_forward import median_seconds, training_step

    baseline = kind.endswith("generic_unet")
    if kind.startswith("eval_"):
        x = torch.randn(1, 1, *patch, device=device)
        network = _network("generic_unet" if baseline else "reisoseg", ratio, patch).to(device).eval()
        if baseline:
            network.do_ds = False
            work = lambda: network(x)  # noqa: E731
        else:
            network.deep_supervision = kind == "eval_reisoseg_full"
            work = (lambda: network(x)[3]) if network.deep_supervision else (lambda: network(x))  # noqa: E731
        with torch.inference_mode():
            return median_seconds(work, repeats)
    if kind.startswith("train_"):
        x = torch.randn(2, 1, *patch, device=device)
        network = _network("generic_unet" if baseline else "reisoseg", ratio, patch).to(device)
        return median_seconds(training_step(network, x), max(3, repeats // 2))
    network = _network("generic_unet" if baseline else "reisoseg_v1", ratio, patch).to(device).eval()
    network.do_ds = False
    volume = np.random.default_rng(0).normal(size=(1, *volume_for(patch))).astype(np.float32)

    def predict() -> None:
        network.predict_3D(volume, do_mirroring=False, use_sliding_window=True, step_size=0.5, patch_size=patch,
                           use_gaussian=True, verbose=False, all_in_gpu=device.type == "cuda")

    with torch.inference_mode():
        return median_seconds(predict, 1, warmup=int(device.type == "cuda"))  # CUDA: first call compiles kernels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default: 2)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: cpu")
    parser.add_argument("--ratio", type=int, default=4, help="z/xy spacing ratio of the data (default: 4)")
    parser.add_argument("--patch", type=int, nargs=3, default=(16, 128, 128), help="default: 16 128 128")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "speed.json")
    parser.add_argument("--measure", choices=list(MEASUREMENTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    patch = tuple(args.patch)
    memory_key = "peak_cuda_gib" if args.device == "cuda" else "peak_rss_gib"
    if args.measure:
        import torch

        from reisoseg.devices import resolve_device

        device = resolve_device(args.device)  # cpu: no GPU visible to this process
        torch.set_num_threads(args.threads)
        with workspace.PeakMemory() as memory:
            seconds = _measure(args.measure, args.repeats, device, args.ratio, patch)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else memory.peak_gib
        print(json.dumps({"seconds": seconds, memory_key: peak}))
        return

    rows = {}
    for kind, title in MEASUREMENTS.items():
        print(f"{title} ...", flush=True)
        result = subprocess.run([sys.executable, __file__, "--measure", kind, "--threads", str(args.threads),
                                 "--repeats", str(args.repeats), "--device", args.device, "--ratio", str(args.ratio),
                                 "--patch", *map(str, patch)], capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{kind} failed:\n{result.stderr[-3000:]}")
        rows[kind] = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\n{'measurement':64s} {'seconds':>8s} {memory_key:>13s}")
    for kind, title in MEASUREMENTS.items():
        print(f"{title:64s} {rows[kind]['seconds']:8.3f} {rows[kind][memory_key]:13.2f}")
    ratios = {}
    print(f"\n{'ratio':42s} {'time':>6s} {'memory':>7s}")
    for title, numerator, denominator in RATIOS:
        ratios[title] = {key: rows[numerator][key] / rows[denominator][key] for key in ("seconds", memory_key)}
        print(f"{title:42s} {ratios[title]['seconds']:6.2f} {ratios[title][memory_key]:7.2f}")
    volume = volume_for(patch)
    rates = {"training_iterations_per_s": {name: 1 / rows[f"train_{name}"]["seconds"]
                                           for name in ("reisoseg", "generic_unet")},
             "window_voxels_per_s": {name: math.prod(volume) / rows[f"window_{name}"]["seconds"]
                                     for name in ("reisoseg", "generic_unet")}}
    print(f"training iterations/s (batch 2): ReIsoSeg {rates['training_iterations_per_s']['reisoseg']:.2f}, "
          f"Generic_UNet {rates['training_iterations_per_s']['generic_unet']:.2f}; sliding window Mvoxel/s: "
          f"ReIsoSeg {rates['window_voxels_per_s']['reisoseg'] / 1e6:.2f}, "
          f"Generic_UNet {rates['window_voxels_per_s']['generic_unet'] / 1e6:.2f}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps({
        "machine": workspace.machine(), "revision": workspace.git_revision(), "device": args.device,
        "threads": args.threads, "patch": patch, "volume": volume, "spacing": spacing_for(args.ratio),
        "pattern": ani_scale_from_spacing(spacing_for(args.ratio)), "measurements": rows, "ratios": ratios,
        **rates}, indent=1))
    print(f"-> {args.output}")


if __name__ == "__main__":
    main()
