"""What a training iteration costs on nnU-Net v2 against nnU-Net v1, for ReIsoSeg and for the baseline, in one run.

Each (engine, network) trains quality.py's synthetic ratio-8 task from scratch for `--epochs` epochs of
quality.ITERATIONS_PER_EPOCH iterations at the comparison's patch and batch size, one after another in child
processes (one process runs one engine: both engines read `nnUNet_preprocessed`). The cost is the median of the
epochs' own times in the engines' training logs (validation batches included, as both engines time an epoch),
the first epoch left out (start-up, first batches), divided by the iterations per epoch. Ratios come from the same
run; the record is benchmarks/results/engine_cost.json.

    python benchmarks/engine_cost.py --epochs 6 --work /tmp/reisoseg_engine_cost
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import quality  # noqa: E402
import workspace  # noqa: E402
from quality_engines import ENGINES  # noqa: E402

from reisoseg.nnunet_v1.training_options import TrainingOptions  # noqa: E402

RECORD = Path(__file__).resolve().parent / "results" / "engine_cost.json"
DATASET = quality.DATASETS["synth8"]
PLANS = "nnUNetPlans_engine_cost"
METHODS = ("auto", "nnunet")


def measure(engine_key: str, method: str, epochs: int, work: Path, device: str) -> dict:
    """Train one (engine, network) for `epochs` epochs in this process and return its epochs' times."""
    engine = ENGINES[engine_key]
    engine.use_folders(work)
    task = DATASET.prepare(engine)
    trainer = quality.trainer_for(method, task, engine)
    fold = engine.fold_folder(task, trainer, PLANS)
    shutil.rmtree(fold, ignore_errors=True)  # from scratch, whatever an earlier run left
    engine.train(task, trainer, DATASET.patch, quality.BATCH_SIZE, TrainingOptions(
        plans_identifier=PLANS, epochs=epochs, iterations_per_epoch=quality.ITERATIONS_PER_EPOCH,
        val_iterations_per_epoch=quality.VAL_ITERATIONS_PER_EPOCH, run_validation=False, device=device, seed=0))
    seconds = quality.epoch_seconds(fold, engine)
    return {"engine": engine_key, "method": method, "trainer": trainer,
            "epoch_s": [seconds[epoch] for epoch in sorted(seconds)]}


def seconds_per_iteration(run: dict) -> float:
    return statistics.median(run["epoch_s"][1:]) / quality.ITERATIONS_PER_EPOCH


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6, help="epochs per (engine, network); the first is not "
                                                               "counted (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/reisoseg_engine_cost"),
                        help="tasks and models of both engines (default: %(default)s)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default: %(default)s")
    parser.add_argument("--child", nargs=2, metavar=("ENGINE", "METHOD"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first is not counted)")
    work = args.work.resolve()
    if args.child:
        print(json.dumps(measure(*args.child, args.epochs, work, args.device)))
        return
    started = time.strftime("%Y-%m-%d %H:%M")
    runs = []
    for engine_key in ENGINES:
        for method in METHODS:
            child = subprocess.run([sys.executable, __file__, "--epochs", str(args.epochs), "--work", str(work),
                                    "--device", args.device, "--child", engine_key, method],
                                   check=True, stdout=subprocess.PIPE, text=True)
            run = json.loads(child.stdout.strip().splitlines()[-1])
            run["s_per_iteration"] = round(seconds_per_iteration(run), 4)
            runs.append(run)
            print(f"{engine_key} {run['trainer']}: {run['s_per_iteration']:.3f} s per iteration", flush=True)
    cost = {(r["engine"], r["method"]): r["s_per_iteration"] for r in runs}
    ratios = {f"v2/v1 {method}": round(cost["v2", method] / cost["v1", method], 3) for method in METHODS}
    ratios.update({f"ReIsoSeg/baseline {engine}": round(cost[engine, "auto"] / cost[engine, "nnunet"], 3)
                   for engine in ENGINES})
    record = {"command": f"python benchmarks/engine_cost.py --epochs {args.epochs} --device {args.device}",
              "date": started, "machine": workspace.machine(), "revision": workspace.git_revision(),
              "dataset": DATASET.description, "patch": list(DATASET.patch), "batch_size": quality.BATCH_SIZE,
              "iterations_per_epoch": quality.ITERATIONS_PER_EPOCH,
              "validation_iterations_per_epoch": quality.VAL_ITERATIONS_PER_EPOCH, "runs": runs, "ratios": ratios}
    RECORD.write_text(json.dumps(record, indent=1))
    for name, ratio in ratios.items():
        print(f"{name}: {ratio:.2f}")
    print(f"-> {RECORD}")


if __name__ == "__main__":
    main()
