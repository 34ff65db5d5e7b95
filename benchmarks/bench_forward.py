"""Forward and training-step speed of ReIsoSegRMV6, measured side by side in one run.

(a) Same weights, patch 16x128x128: eval forward with the PI branch skipped (ours) against the full forward that
    also computes the PI branch and keeps head 3 (what the reference does). Target ratio <= 0.65.
(b) ReIsoSeg [1,2,2] against nnU-Net v1's default Generic_UNet planned (v2.1 planner rules) for the same spacing and
    patch, same batch: eval forward and one SGD training step (forward, surrogate loss over all DS heads, backward,
    clip, step). Also the PI module and UX-unit costs that `documentation/performance.md` discusses.

Prints medians of --repeats runs and the ratios; writes benchmarks/results/bench_forward.json.

    python benchmarks/bench_forward.py [--threads 2] [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import time
from pathlib import Path
from typing import Callable

import torch


def median_seconds(work: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `work`; CUDA's queue is drained before each clock read, so GPU times are real."""
    def synchronize() -> None:
        if torch.cuda.is_initialized():
            torch.cuda.synchronize()

    for _ in range(warmup):
        work()
    times = []
    for _ in range(repeats):
        synchronize()
        start = time.perf_counter()
        work()
        synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def generic_unet_for(spacing, patch_size, input_channels=1, num_classes=2):
    """nnU-Net v1's default 3d_fullres network as nnUNetTrainerV2 builds it from ExperimentPlanner3D_v21's rules."""
    from nnunet.experiment_planning.common_utils import get_pool_and_conv_props
    from nnunet.network_architecture.generic_UNet import Generic_UNet
    from nnunet.network_architecture.initialization import InitWeights_He
    from torch import nn

    _, pools, kernels, _, _ = get_pool_and_conv_props(spacing, patch_size, 4, 999)
    network = Generic_UNet(input_channels, 32, num_classes, len(pools), 2, 2, nn.Conv3d, nn.InstanceNorm3d,
                           {"eps": 1e-5, "affine": True}, nn.Dropout3d, {"p": 0, "inplace": True}, nn.LeakyReLU,
                           {"negative_slope": 1e-2, "inplace": True}, True, False, lambda x: x, InitWeights_He(1e-2),
                           pools, kernels, False, True, True)
    return network, pools


def training_step(network: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """One SGD step on `x`'s device; on CUDA in fp16 autocast with a GradScaler, as nnU-Net's trainers train there."""
    optimizer = torch.optim.SGD(network.parameters(), 1e-2, momentum=0.99, nesterov=True)
    mixed = x.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=mixed)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.float16, enabled=mixed):
            outputs = network(x)
            outputs = outputs if isinstance(outputs, (tuple, list)) else [outputs]
            loss = sum(o.float().square().mean() for o in outputs)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(network.parameters(), 12)
        scaler.step(optimizer)
        scaler.update()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "bench_forward.json"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from reisoseg.network import ReIsoSegRMV6

    patch = (16, 128, 128)
    results: dict[str, float] = {}
    x1 = torch.randn(1, 1, *patch)
    net = ReIsoSegRMV6(1, 2, (1, 2, 2)).eval()

    def plain() -> None:
        net.deep_supervision = False
        net(x1)

    def reference_style() -> None:  # the reference computes every head, then returns head 3
        net.deep_supervision = True
        net(x1)[3]

    with torch.inference_mode():
        results["a_eval_plain_s"] = median_seconds(plain, args.repeats)
        results["a_eval_full_s"] = median_seconds(reference_style, args.repeats)
    results["a_ratio_plain_over_full"] = results["a_eval_plain_s"] / results["a_eval_full_s"]

    # (b) against Generic_UNet planned for ratio-4 data (20 x 5 x 5 nm), same patch and batch
    xb = torch.randn(args.batch, 1, *patch)
    unet, pools = generic_unet_for((20.0, 5.0, 5.0), patch)
    ours = ReIsoSegRMV6(1, 2, (1, 2, 2))
    results["generic_unet_parameters"] = sum(p.numel() for p in unet.parameters())
    results["reisoseg_parameters"] = sum(p.numel() for p in ours.parameters())
    with torch.inference_mode():
        unet.do_ds = False
        ours.deep_supervision = False
        results["b_eval_generic_unet_s"] = median_seconds(lambda: unet(xb), args.repeats)
        results["b_eval_reisoseg_s"] = median_seconds(lambda: ours(xb), args.repeats)
    unet.do_ds = True
    ours.deep_supervision = True
    train_repeats = max(3, args.repeats // 2)
    results["b_train_generic_unet_s"] = median_seconds(training_step(unet, xb), train_repeats)
    results["b_train_reisoseg_s"] = median_seconds(training_step(ours, xb), train_repeats)
    ours.deep_supervision = False
    results["b_train_reisoseg_plain_branch_only_s"] = median_seconds(training_step(ours, xb), train_repeats)
    results["b_ratio_eval_reisoseg_over_generic"] = results["b_eval_reisoseg_s"] / results["b_eval_generic_unet_s"]
    results["b_ratio_train_reisoseg_over_generic"] = results["b_train_reisoseg_s"] / results["b_train_generic_unet_s"]

    # where the PI module's time went: one UX unit on the largest PI level, NCDHW grouped convs vs ours
    from reisoseg.network.blocks import UXUnit

    unit = UXUnit(9)
    level = torch.randn(args.batch, 9, 32, 64, 64, requires_grad=True)

    def grouped_reference() -> None:
        import torch.nn.functional as F

        y = F.conv3d(level, unit.depthwise.weight, unit.depthwise.bias, padding=3, groups=9)
        y = unit.norm(y.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        y = F.conv3d(F.gelu(F.conv3d(y, unit.expand.weight, unit.expand.bias, groups=9)), unit.project.weight,
                     unit.project.bias, groups=9)
        (level + unit.layer_scale[:, None, None, None] * y).sum().backward()

    results["ux_unit_grouped_ncdhw_train_s"] = median_seconds(grouped_reference, 3)
    results["ux_unit_ours_train_s"] = median_seconds(lambda: unit(level).sum().backward(), 3)
    results["ux_unit_ratio_ours_over_grouped"] = (results["ux_unit_ours_train_s"]
                                                  / results["ux_unit_grouped_ncdhw_train_s"])

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    environment = {"torch": torch.__version__, "threads": args.threads, "machine": platform.processor() or
                   platform.machine(), "batch": args.batch, "patch": list(patch), "generic_unet_pools": pools,
                   "commit": commit, "repeats": args.repeats}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({"environment": environment, "results": results}, indent=2))
    width = max(map(len, results))
    for key, value in results.items():
        print(f"{key:<{width}}  {value:.4f}" if isinstance(value, float) else f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
