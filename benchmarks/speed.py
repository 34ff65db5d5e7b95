"""One table of speed and memory ratios, measured in one run: ReIsoSeg's inference forward (PI branch skipped)
against the full forward the reference computes, and ReIsoSeg against nnU-Net v1's default Generic_UNet for the
eval forward, a training step and sliding-window prediction of the same volume.

Both networks for ratio-4 data (20 x 5 x 5 nm: ReIsoSeg pattern [1, 2, 2]; Generic_UNet pools planned by nnU-Net's
rule for that spacing and patch), patch 16 x 128 x 128, 1 input channel, 2 classes. Each measurement runs in a fresh
process so that its peak resident memory is its own; times are medians of --repeats (sliding window: one run, the
27 windows of a 32 x 256 x 256 volume at step 0.5, Gaussian weighting, no mirroring, nnU-Net's `predict_3D`).
Writes benchmarks/results/speed.json.

    python benchmarks/speed.py [--threads 2] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import workspace  # noqa: E402

PATCH = (16, 128, 128)
VOLUME = (32, 256, 256)
SPACING = (20.0, 5.0, 5.0)
PATTERN = (1, 2, 2)
MEASUREMENTS = {
    "eval_reisoseg_plain": "ReIsoSeg eval forward, PI branch skipped (ours), batch 1",
    "eval_reisoseg_full": "ReIsoSeg eval forward computing every head (reference), batch 1",
    "eval_generic_unet": "Generic_UNet eval forward, batch 1",
    "train_reisoseg": "ReIsoSeg training step (both branches), batch 2",
    "train_generic_unet": "Generic_UNet training step, batch 2",
    "window_reisoseg": f"ReIsoSeg sliding-window prediction of {VOLUME}",
    "window_generic_unet": f"Generic_UNet sliding-window prediction of {VOLUME}",
}
RATIOS = [
    ("eval: PI skipped / full forward", "eval_reisoseg_plain", "eval_reisoseg_full"),
    ("eval forward: ReIsoSeg / Generic_UNet", "eval_reisoseg_plain", "eval_generic_unet"),
    ("training step: ReIsoSeg / Generic_UNet", "train_reisoseg", "train_generic_unet"),
    ("sliding window: ReIsoSeg / Generic_UNet", "window_reisoseg", "window_generic_unet"),
]


def _network(name: str):
    import torch
    from bench_forward import generic_unet_for

    from reisoseg.network import ReIsoSegRMV6

    torch.manual_seed(0)
    if name == "generic_unet":
        network, _ = generic_unet_for(SPACING, PATCH)
        return network
    if name == "reisoseg_v1":  # the nnU-Net adapter, for predict_3D
        from reisoseg.nnunet_v1.network import ReIsoSegV1Network

        return ReIsoSegV1Network(1, 2, PATTERN)
    return ReIsoSegRMV6(1, 2, PATTERN)


def _measure(kind: str, repeats: int) -> float:
    """Seconds for one measurement (median of `repeats` where it repeats)."""
    import numpy as np
    import torch
    from bench_forward import median_seconds, training_step

    if kind.startswith("eval_"):
        x = torch.randn(1, 1, *PATCH)
        network = _network("generic_unet" if kind.endswith("generic_unet") else "reisoseg").eval()
        if kind == "eval_generic_unet":
            network.do_ds = False
            work = lambda: network(x)  # noqa: E731
        else:
            network.deep_supervision = kind == "eval_reisoseg_full"
            work = (lambda: network(x)[3]) if network.deep_supervision else (lambda: network(x))  # noqa: E731
        with torch.inference_mode():
            return median_seconds(work, repeats)
    if kind.startswith("train_"):
        x = torch.randn(2, 1, *PATCH)
        network = _network("generic_unet" if kind.endswith("generic_unet") else "reisoseg")
        return median_seconds(training_step(network, x), max(3, repeats // 2))
    network = _network("generic_unet" if kind.endswith("generic_unet") else "reisoseg_v1").eval()
    network.do_ds = False
    volume = np.random.default_rng(0).normal(size=(1, *VOLUME)).astype(np.float32)
    import time

    start = time.perf_counter()
    with torch.inference_mode():
        network.predict_3D(volume, do_mirroring=False, use_sliding_window=True, step_size=0.5, patch_size=PATCH,
                           use_gaussian=True, verbose=False)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--measure", choices=list(MEASUREMENTS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        import torch

        from reisoseg.devices import resolve_device

        resolve_device("cpu")  # CPU timings: no GPU visible to this process
        torch.set_num_threads(args.threads)
        with workspace.PeakMemory() as memory:
            seconds = _measure(args.measure, args.repeats)
        print(json.dumps({"seconds": seconds, "peak_rss_gib": memory.peak_gib}))
        return

    rows = {}
    for kind, title in MEASUREMENTS.items():
        print(f"{title} ...", flush=True)
        result = subprocess.run([sys.executable, __file__, "--measure", kind, "--threads", str(args.threads),
                                 "--repeats", str(args.repeats)], capture_output=True, text=True)
        if result.returncode != 0:
            raise SystemExit(f"{kind} failed:\n{result.stderr[-3000:]}")
        rows[kind] = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"\n{'measurement':64s} {'seconds':>8s} {'peak RSS GiB':>12s}")
    for kind, title in MEASUREMENTS.items():
        print(f"{title:64s} {rows[kind]['seconds']:8.2f} {rows[kind]['peak_rss_gib']:12.2f}")
    ratios = {}
    print(f"\n{'ratio':42s} {'time':>6s} {'peak RSS':>9s}")
    for title, numerator, denominator in RATIOS:
        ratios[title] = {key: rows[numerator][key] / rows[denominator][key] for key in ("seconds", "peak_rss_gib")}
        print(f"{title:42s} {ratios[title]['seconds']:6.2f} {ratios[title]['peak_rss_gib']:9.2f}")
    output = Path(__file__).parent / "results" / "speed.json"
    output.write_text(json.dumps({"machine": workspace.machine(), "revision": workspace.git_revision(),
                                  "threads": args.threads, "patch": PATCH, "volume": VOLUME, "spacing": SPACING,
                                  "pattern": PATTERN, "measurements": rows, "ratios": ratios}, indent=1))
    print(f"-> {output}")


if __name__ == "__main__":
    main()
