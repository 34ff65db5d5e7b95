"""One command that exercises every CUDA path of ReIsoSeg on a GPU, in a few minutes; prints one table.

    python benchmarks/gpu_check.py [--work /tmp/reisoseg_gpu_check] [--patch 32 192 192] [--json FILE]

Checks (each a function that also runs with device="cpu", which tests/benchmarks/test_gpu_check.py does):
- `training_step`: one fp16 (autocast + GradScaler) training step of ReIsoSegRMV6 with ReIsoLoss at a GPU-sized
  patch: finite loss and gradients; CUDA's peak memory beside `reisoseg.network.memory`'s estimate;
- `ux_unit`: the UX unit under autocast (cuDNN's depthwise conv on CUDA, the FFT path on CPU) against a reference
  made of grouped `F.conv3d` calls in float32;
- `resume_and_predict`: `reisoseg train` on a tiny synthetic task (fp16 on CUDA: the checkpoint holds grad-scaler
  state), `-c` for one more epoch from it, then `reisoseg predict` through the restricted loaders;
- `segment`: `reisoseg.segment` on the device against `reisoseg segment --device cpu` (its own process);
- `ddp`: `reisoseg train --gpus 2` (two ranks, nccl, DistributedDataParallel) when two GPUs exist.
Exits non-zero when any check fails. Without a CUDA GPU it says so and exits 0 (our CI has none).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

from reisoseg.layout import checkpoint_file, fold_folder, model_folder
from reisoseg.safe_loading import safe_load_checkpoint

TASK_ID, TASK_NAME = 509, "Task509_GpuCheck"
COMMAND = [sys.executable, "-m", "reisoseg.commands.main"]


def peak_memory_gib(device: torch.device) -> float:
    """CUDA's peak allocated memory since the last reset, or this process's peak resident memory on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def training_step(device: torch.device, patch: tuple[int, int, int] = (32, 192, 192), batch: int = 2,
                  ani_scale: tuple[int, int, int] = (2, 2, 2)) -> dict:
    """One training step as our trainers run it on `device` (autocast and GradScaler on CUDA)."""
    from reisoseg.loss import ReIsoLoss
    from reisoseg.network import ReIsoSegRMV6
    from reisoseg.network.memory import training_step_memory
    from reisoseg.network.pi_module import PIChoice

    torch.manual_seed(0)
    network = ReIsoSegRMV6(1, 2, ani_scale).to(device)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    image = torch.randn(batch, 1, *patch, device=device)
    labels = (torch.rand(batch, 1, *patch, device=device) > 0.5).float()

    def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = torch.nn.functional.interpolate(target, logits.shape[2:]).long()[:, 0]
        return torch.nn.functional.cross_entropy(logits.float(), target)

    loss_function, same_transform = ReIsoLoss(cross_entropy), PIChoice(0, "z")  # one PI transform, both passes

    def loss_now() -> torch.Tensor:
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            return loss_function(network(image, pi_choice=same_transform), [labels] * 6)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    loss = loss_now()
    scaler.scale(loss).backward()
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    skipped = scaler.get_scale() < scale  # fp16 gradients overflowed: the scaler skipped the step, as it should
    finite = bool(torch.isfinite(loss)) and (skipped or all(bool(torch.isfinite(p.grad).all())
                                                            for p in network.parameters()))
    with torch.no_grad():
        after = float(loss_now())
    estimate = training_step_memory(patch, batch, ani_scale, mixed_precision=device.type == "cuda").gib
    measured = peak_memory_gib(device)
    return {"ok": finite, "loss": (float(loss), after), "skipped": skipped,
            "detail": f"patch {list(patch)} batch {batch}: loss {float(loss):.4f} -> {after:.4f}"
                      f"{' (step skipped by the grad scaler)' if skipped else ''}; peak {measured:.2f} GiB, "
                      f"estimate {estimate:.2f} GiB ({estimate / measured:.2f}x)"}


def ux_unit(device: torch.device, channels: int = 16, shape: tuple[int, int, int] = (16, 32, 32)) -> dict:
    """The UX unit under autocast on `device` against grouped F.conv3d in float32."""
    import torch.nn.functional as F

    from reisoseg.network.blocks import UXUnit

    torch.manual_seed(0)
    unit = UXUnit(channels).to(device)
    with torch.no_grad():
        unit.layer_scale.fill_(1.0)  # make the branch visible next to the residual
        x = torch.randn(2, channels, *shape, device=device)
        with torch.autocast(device.type, enabled=device.type == "cuda"):
            fast = unit(x).float()
        y = F.conv3d(x, unit.depthwise.weight, unit.depthwise.bias, padding=3, groups=channels)
        y = unit.norm(y.permute(0, 2, 3, 4, 1)).permute(0, 4, 1, 2, 3)
        y = F.gelu(F.conv3d(y, unit.expand.weight, unit.expand.bias, groups=channels))
        y = F.conv3d(y, unit.project.weight, unit.project.bias, groups=channels)
        reference = x + unit.layer_scale.view(1, -1, 1, 1, 1) * y
    error = float((fast - reference).abs().max() / reference.abs().max())
    tolerance = 2e-2 if device.type == "cuda" else 1e-4  # fp16 on CUDA
    return {"ok": error < tolerance, "detail": f"max relative difference {error:.1e} (tolerance {tolerance:.0e})"}


def _run(arguments: list[str], env: dict[str, str]) -> None:
    result = subprocess.run([*COMMAND, *arguments], env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"reisoseg {' '.join(arguments[:2])} failed:\n{tail}")


def resume_and_predict(env: dict[str, str], task: str, device: torch.device, fold: str = "0") -> dict:
    """Train one epoch, continue one more with -c, predict the task's test cases from the resumed checkpoint."""
    epochs = ["--iterations_per_epoch", "2", "--device", device.type, "--disable_validation_inference"]
    folder = fold_folder(model_folder(env["RESULTS_FOLDER"], task), fold)
    _run(["train", "3d_fullres", "ReIsoSegTrainer", task, fold, "--epochs", "1", *epochs], env)
    first = safe_load_checkpoint(checkpoint_file(folder))
    scaler = first.get("amp_grad_scaler") is not None
    _run(["train", "3d_fullres", "ReIsoSegTrainer", task, fold, "-c", "--epochs", "2", *epochs], env)
    resumed = safe_load_checkpoint(checkpoint_file(folder))
    images = Path(env["nnUNet_raw_data_base"]) / "nnUNet_raw_data" / task / "imagesTs"
    predictions = Path(env["RESULTS_FOLDER"]).parent / f"gpu_check_predictions_{device.type}"
    _run(["predict", "-i", str(images), "-o", str(predictions), "-t", task, "-f", fold, "--disable_tta",
          "--device", device.type], env)
    written = sorted(predictions.glob("*.nii.gz"))
    ok = resumed["epoch"] == 2 and bool(written) and (scaler or device.type != "cuda")
    return {"ok": ok, "detail": f"epochs {first['epoch']} -> {resumed['epoch']}, grad-scaler state "
                                f"{'saved' if scaler else 'none (not CUDA)'}, {len(written)} case(s) predicted"}


def segment_on(model: Path, device: torch.device, work: Path, shape: tuple[int, int, int] = (24, 96, 96),
               fold: str = "0") -> dict:
    """`reisoseg.segment` with one fold on `device` against `reisoseg segment --device cpu` in a process of its own:
    once a process has used CUDA it can no longer hide the GPU from nnU-Net's window prediction on the CPU."""
    import reisoseg
    from reisoseg.io.volume import open_volume, write_volume
    from reisoseg.synthetic import generate_volume

    volume = generate_volume(shape, 8, seed=5)
    source, reference = work / "segment_check.nii.gz", work / "segment_check_cpu.zarr"
    write_volume(source, volume.image, volume.spacing)
    _run(["segment", "-i", str(source), "-o", str(reference), "--model_folder", str(model), "-f", fold,
          "--disable_tta", "--device", "cpu", "--overwrite", "--no_progress"], dict(os.environ))
    labels = reisoseg.segment(volume.image, volume.spacing, model=model, folds=[fold], device=device.type, tta=False,
                              progress=False)
    agreement = float((labels == open_volume(reference).read()).mean())
    return {"ok": agreement >= 0.999, "detail": f"{agreement:.5f} of voxels agree with the CPU result"}


def ddp_step(env: dict[str, str], task: str, device: torch.device, fold: str = "1") -> dict:
    """One epoch on two ranks (nccl on CUDA, gloo on CPU) through `reisoseg train --gpus 2`."""
    _run(["train", "3d_fullres", "ReIsoSegTrainer", task, fold, "--gpus", "2", "--device", device.type, "--epochs",
          "1", "--iterations_per_epoch", "2", "--disable_validation_inference"], env)
    folder = fold_folder(model_folder(env["RESULTS_FOLDER"], task), fold)
    logs = list(folder.glob("training_log_*.txt"))
    return {"ok": checkpoint_file(folder).is_file() and len(logs) == 1,
            "detail": f"2 ranks trained one epoch; {len(logs)} training log(s) written"}


def prepare_task(work: Path) -> dict[str, str]:
    """A tiny synthetic task, planned by nnU-Net v1, in its own nnU-Net folders under `work`."""
    env = dict(os.environ)
    for name, sub in (("nnUNet_raw_data_base", "raw"), ("nnUNet_preprocessed", "preprocessed"),
                      ("RESULTS_FOLDER", "results")):
        (work / sub).mkdir(parents=True, exist_ok=True)
        env[name] = str(work / sub)
    if not (work / "preprocessed" / TASK_NAME).is_dir():
        _run(["synth", "--task", str(TASK_ID), "--name", TASK_NAME.split("_", 1)[1], "--num_training", "5",
              "--num_test", "1", "--shape", "24", "96", "96", "--seed", "9", "--overwrite"], env)
        # nnU-Net's planner as a module: wheels installed with `pip --target` put no console script on PATH
        planner = "nnunet.experiment_planning.nnUNet_plan_and_preprocess"
        subprocess.run([sys.executable, "-m", planner, "-t", str(TASK_ID), "-tl", "1", "-tf", "1"], env=env,
                       capture_output=True, check=True)
    return env


Row = tuple[str, bool, str, float]


def run_checks(checks: dict[str, Callable[[], dict]],
               after_each: Callable[[list[Row]], None] = lambda rows: None) -> list[Row]:
    """Each check's (name, passed, detail, seconds); an exception is a failure with its message (its traceback goes
    to stderr, for the fix). `after_each` gets the rows so far after every check: a run cut short keeps them."""
    rows: list[Row] = []
    for name, check in checks.items():
        start = time.perf_counter()
        try:
            result = check()
            rows.append((name, bool(result["ok"]), result["detail"], time.perf_counter() - start))
        except Exception as error:  # the table reports every failure and goes on
            traceback.print_exc()
            rows.append((name, False, f"{type(error).__name__}: {error}", time.perf_counter() - start))
        after_each(rows)
    return rows


def write_json(rows: list[Row], path: Path) -> None:
    path.write_text(json.dumps([dict(zip(("check", "ok", "detail", "seconds"), row)) for row in rows], indent=1))


def print_table(rows: list[Row]) -> None:
    print(f"{'check':20s} {'result':6s} {'s':>6s}  detail")
    for name, ok, detail, seconds in rows:
        print(f"{name:20s} {'pass' if ok else 'FAIL':6s} {seconds:6.1f}  {detail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/reisoseg_gpu_check"))
    parser.add_argument("--patch", type=int, nargs=3, default=(32, 192, 192), help="training-step patch")
    parser.add_argument("--json", type=Path, default=None, help="also write the table as JSON here")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cpu runs the same checks on the CPU, to rehearse this script (default: cuda)")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA GPU found (torch.cuda.is_available() is False): nothing to check here")
        return 0
    device = torch.device(args.device)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    if gpus:
        print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"{gpus} GPU(s)")
    else:
        print(f"CPU rehearsal, torch {torch.__version__}")
    env = prepare_task(args.work)
    model = model_folder(env["RESULTS_FOLDER"], TASK_NAME)
    checks = {"training_step": lambda: training_step(device, tuple(args.patch)), "ux_unit": lambda: ux_unit(device),
              "resume_and_predict": lambda: resume_and_predict(env, TASK_NAME, device),
              "segment": lambda: segment_on(model, device, args.work)}
    if gpus >= 2:
        checks["ddp"] = lambda: ddp_step(env, TASK_NAME, device)
    rows = run_checks(checks, (lambda done: write_json(done, args.json)) if args.json else lambda done: None)
    print_table(rows)
    if gpus < 2:
        print("ddp: skipped (one GPU; tests/nnunet_v1/test_distributed.py runs two CPU ranks with gloo)")
    return 0 if all(ok for _, ok, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
