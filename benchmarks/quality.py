"""ReIsoSeg against plain nnU-Net v1 at equal budget, on synthetic and real anisotropic EM.

For every dataset and seed, each method trains with the same derived plans (patch and batch size), the same number
of iterations, the same seed and the same data, then predicts the held-out test volumes (sliding window, no TTA) and
is scored by `reisoseg.evaluation` (Dice, IoU, HD95 in nm, F1@0.5 and AP-75 of 3D connected components):

- `auto`: ReIsoSegTrainer, pattern picked from the planned spacing;
- `rma`: the closest fixed trainer, ReIsoSegRMA{1,2,4,8}V6Trainer. It is the automatic choice by construction (same
  network, same seed): run it with `--methods auto rma nnunet` to spend budget confirming that;
- `nnunet`: nnUNetTrainerV2, nnU-Net v1's default Generic_UNet planned for the same patch.

Datasets: synthetic tasks from `reisoseg synth` at z/xy ratios 1, 4 and 8; Gerhard 2013 mitochondria (sections
0-15 train, 16-19 test) and CDeep3M mitochondria (training folder train, validation folder test) from
../shared/data (skipped with a message when absent). The test sets are never used for any choice.

`--budget` (minutes of training per run) is turned into an iteration count per dataset by timing ReIsoSeg's
training, the slower of the two networks on CPU; every method then runs that many iterations. Finished runs are
reused (results cached under --work). Writes documentation/results.md (text below its notes marker is kept),
fig/quality_dice.png and benchmarks/results/quality.json.

    python benchmarks/quality.py --budget 3 --seeds 0 1 2 [--datasets synth1 synth4 synth8 gerhard cdeep3m]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import workspace  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
ITERATIONS_PER_EPOCH = 10
CLASSES = {1: "mitochondria"}
METHODS = {"auto": "ReIsoSegTrainer", "nnunet": "nnUNetTrainerV2"}  # "rma": resolved per dataset
NOTES_MARKER = "<!-- notes: everything below this line is kept when the script rewrites the file -->"


@dataclass(frozen=True)
class Dataset:
    key: str
    task_id: int
    name: str
    patch: tuple[int, int, int]
    description: str

    def prepare(self) -> str | None:
        """Write (once) and plan (once) the task; returns its name, or None if the data are missing."""
        raw = Path(os.environ["nnUNet_raw_data_base"])
        task = f"Task{self.task_id:03d}_{self.name}"
        if not (raw / "nnUNet_raw_data" / task / "dataset.json").is_file():
            if self.key.startswith("synth"):
                from reisoseg.synthetic import make_synthetic_task

                ratio = int(self.key[len("synth"):])
                make_synthetic_task(raw, self.task_id, self.name, num_training=6, num_test=2,
                                    shape=SYNTH_SHAPES[ratio], ratio=ratio, seed=1000 + ratio, overwrite=True)
            elif not self._convert_real(raw):
                return None
        if not (Path(os.environ["nnUNet_preprocessed"]) / task / "nnUNetPlansv2.1_plans_3D.pkl").is_file():
            from reisoseg.nnunet_v1.plans import plan_and_preprocess

            plan_and_preprocess(self.task_id)
        return task

    def _convert_real(self, raw: Path) -> bool:
        from reisoseg.io.convert import LabelMapping, convert_to_task

        if self.key == "gerhard":
            stack = SHARED_DATA / "gerhard2013_L3vnc_sstem" / "stack1"
            if not stack.is_dir():
                print(f"skipping {self.key}: {stack} not found", flush=True)
                return False
            convert_to_task([stack / "raw"], [stack / "labels"], task_id=self.task_id, name=self.name,
                            mapping=LabelMapping.parse(["mitochondria=191"]), spacing=(50, 4.6, 4.6),
                            test_sections=(16, 20), raw_data_base=raw, overwrite=True)
            return True
        root = SHARED_DATA / "cdeep3m_mito_sbem"
        if not root.is_dir():
            print(f"skipping {self.key}: {root} not found", flush=True)
            return False
        convert_to_task([root / "training" / "images", root / "validation" / "images"],
                        [root / "training" / "labels", root / "validation" / "labels"], task_id=self.task_id,
                        name=self.name, mapping=LabelMapping.identity(["mitochondria"]), spacing=(40, 5.9, 5.9),
                        test_volumes=[1], raw_data_base=raw, overwrite=True)
        return True


SYNTH_SHAPES = {1: (64, 96, 96), 4: (48, 128, 128), 8: (32, 160, 160)}
DATASETS = {d.key: d for d in [
    Dataset("synth1", 511, "QualitySynth1", (32, 48, 48), "synthetic, 5 x 5 x 5 nm (ratio 1), 6 train / 2 test"),
    Dataset("synth4", 514, "QualitySynth4", (16, 64, 64), "synthetic, 20 x 5 x 5 nm (ratio 4), 6 train / 2 test"),
    Dataset("synth8", 518, "QualitySynth8", (16, 64, 64), "synthetic, 40 x 5 x 5 nm (ratio 8), 6 train / 2 test"),
    Dataset("gerhard", 521, "QualityGerhard", (16, 64, 64),
            "Gerhard 2013 ssTEM, 50 x 4.6 x 4.6 nm, sections 0-15 train / 16-19 test"),
    Dataset("cdeep3m", 522, "QualityCDeep3M", (16, 64, 64),
            "CDeep3M SBEM, 40 x 5.9 x 5.9 nm, training volume train / validation volume test"),
]}


def _plans_identifier(seed: int) -> str:
    return f"nnUNetPlans_quality_seed{seed}"  # one output folder per seed (same plans)


def _closest_rma(task: str) -> str:
    import pickle

    from reisoseg.network.anisotropy import nearest_supported_ratio, ratio_from_spacing

    with open(Path(os.environ["nnUNet_preprocessed"]) / task / "nnUNetPlansv2.1_plans_3D.pkl", "rb") as handle:
        plans = pickle.load(handle)  # written by nnU-Net on this machine
    spacing = plans["plans_per_stage"][len(plans["plans_per_stage"]) - 1]["current_spacing"]
    return f"ReIsoSegRMA{nearest_supported_ratio(ratio_from_spacing(spacing))}V6Trainer"


def _train(task: str, trainer: str, plans: str, epochs: int, seed: int, device: str | None) -> float:
    from reisoseg.nnunet_v1.training import TrainingOptions, run_training

    start = time.perf_counter()
    run_training("3d_fullres", trainer, task, "all",
                 TrainingOptions(plans_identifier=plans, epochs=epochs, iterations_per_epoch=ITERATIONS_PER_EPOCH,
                                 val_iterations_per_epoch=1, run_validation=False, device=device, seed=seed))
    return time.perf_counter() - start


def _seconds_per_iteration(task: str, dataset: Dataset, work: Path, device: str | None) -> float:
    """ReIsoSeg's seconds per training iteration (augmentation included) for this patch size, from the second epoch
    of a short run on the first dataset that uses it (cached: the step time depends on the patch, not the data)."""
    cache = work / "calibration.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    key = "x".join(str(s) for s in dataset.patch)
    if key not in known:
        from reisoseg.nnunet_v1.plans import write_derived_plans

        write_derived_plans(task, "nnUNetPlans_quality_calibration", patch_size=dataset.patch, batch_size=2)
        _train(task, "ReIsoSegTrainer", "nnUNetPlans_quality_calibration", 2, 0, device)
        folder = (Path(os.environ["RESULTS_FOLDER"]) / "nnUNet" / "3d_fullres" / task
                  / "ReIsoSegTrainer__nnUNetPlans_quality_calibration" / "all")
        log = "".join(p.read_text() for p in sorted(folder.glob("training_log_*.txt")))
        epochs = [float(s) for s in re.findall(r"This epoch took ([0-9.]+) s", log)]
        known[key] = epochs[-1] / (ITERATIONS_PER_EPOCH + 1)  # 10 training + 1 validation iteration
        cache.write_text(json.dumps(known, indent=1))
    return known[key]


def _epochs(dataset: Dataset, args: argparse.Namespace, work: Path) -> int | None:
    """Epochs of ITERATIONS_PER_EPOCH for this dataset: --iterations, or the budget over the calibrated step time
    of its patch size (None before that patch size was calibrated)."""
    if args.iterations:
        return max(1, args.iterations // ITERATIONS_PER_EPOCH)
    cache = work / "calibration.json"
    known = json.loads(cache.read_text()) if cache.is_file() else {}
    per_iteration = known.get("x".join(str(s) for s in dataset.patch))
    return None if per_iteration is None else max(1, int(args.budget * 60 / per_iteration) // ITERATIONS_PER_EPOCH)


def _finished_runs(args: argparse.Namespace, work: Path) -> list[dict]:
    """The cached results of every dataset, method and seed run at the iteration count and step size of these
    settings (other budgets in the same work folder are left out)."""
    results = []
    for dataset in DATASETS.values():
        epochs = _epochs(dataset, args, work)
        for record in sorted((work / "runs").glob(f"{dataset.key}_*_epochs{epochs}_step{args.step_size}.json")):
            results.append(json.loads(record.read_text()))
    return results


def _run(dataset: Dataset, task: str, method: str, trainer: str, seed: int, epochs: int, args: argparse.Namespace,
         work: Path) -> dict:
    """Train, predict the test set and evaluate one (dataset, method, seed); cached in work/runs."""
    from reisoseg.evaluation.report import evaluate
    from reisoseg.nnunet_v1.plans import write_derived_plans
    from reisoseg.nnunet_v1.prediction import PredictionOptions, predict_folder

    record = work / "runs" / f"{dataset.key}_{method}_seed{seed}_epochs{epochs}_step{args.step_size}.json"
    if record.is_file():
        return json.loads(record.read_text())
    plans = _plans_identifier(seed)
    write_derived_plans(task, plans, patch_size=dataset.patch, batch_size=2)
    print(f"[{dataset.key}] {method} ({trainer}) seed {seed}: {epochs * ITERATIONS_PER_EPOCH} iterations", flush=True)
    train_s = _train(task, trainer, plans, epochs, seed, args.device)
    raw = Path(os.environ["nnUNet_raw_data_base"]) / "nnUNet_raw_data" / task
    predictions = work / "predictions" / f"{dataset.key}_{method}_seed{seed}"
    start = time.perf_counter()
    predict_folder(raw / "imagesTs", predictions, task, trainer,
                   PredictionOptions(plans_identifier=plans, folds=["all"], disable_tta=True,
                                     step_size=args.step_size, device=args.device, overwrite_existing=True))
    predict_s = time.perf_counter() - start
    metrics = evaluate(raw / "labelsTs", predictions, classes=CLASSES, instance_classes=(1,))
    result = {"dataset": dataset.key, "method": method, "trainer": trainer, "seed": seed,
              "iterations": epochs * ITERATIONS_PER_EPOCH, "train_s": train_s, "predict_s": predict_s,
              "metrics": metrics["mean"]["mitochondria"], "per_case": metrics["per_case"]}
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(result, indent=1))
    return result


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} (n={len(values)})"


def _write_report(results: list[dict], settings: dict) -> None:
    methods = [m for m in ("auto", "rma", "nnunet") if any(r["method"] == m for r in results)]
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in results)]
    names = {"auto": "ReIsoSegTrainer", "rma": "closest RMA", "nnunet": "nnUNetTrainerV2"}
    budget = (f"{settings['budget_minutes']} min of ReIsoSeg training per run, timed and turned into iterations"
              if settings["budget_minutes"] else "a fixed number of iterations (--iterations)")
    lines = ["# ReIsoSeg against nnU-Net v1 at equal budget", "",
             "Written by `benchmarks/quality.py`; rerun it to reproduce. Mean ± sample standard deviation over seeds "
             "(one number: one seed). Each run: same derived plans (patch, batch 2), same iterations, same seed, "
             "same data; test sets never used for any choice.", "",
             f"- machine: {settings['machine']}",
             f"- budget: {budget}; every method runs the iteration count in the tables; seeds: "
             f"{settings['seeds']} (n per cell where more than one); sliding window step {settings['step_size']}, "
             f"no TTA",
             f"- revision {settings['revision']}, {settings['date']}", ""]
    for metric, title in (("dice", "Dice"), ("iou", "IoU"), ("hd95_nm", "HD95 (nm, lower is better)"),
                          ("f1_50", "instance F1 @ IoU 0.5"), ("ap_75", "AP-75 (MitoEM-style)")):
        lines += [f"## {title}", "", "| dataset | iterations | " + " | ".join(names[m] for m in methods) + " |",
                  "|---|---|" + "---|" * len(methods)]
        for key in datasets:
            rows = [r for r in results if r["dataset"] == key]
            cells = [_mean_sd([r["metrics"].get(metric, math.nan) for r in rows if r["method"] == m])
                     for m in methods]
            lines.append(f"| {DATASETS[key].description} | {rows[0]['iterations']} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["![Dice per dataset and method](../fig/quality_dice.png)", ""]
    target = ROOT / "documentation" / "results.md"
    notes = ""
    if target.is_file() and NOTES_MARKER in target.read_text():
        notes = target.read_text().split(NOTES_MARKER, 1)[1]
    target.write_text("\n".join(lines) + NOTES_MARKER + (notes or "\n"))


def _plot(results: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = [m for m in ("auto", "rma", "nnunet") if any(r["method"] == m for r in results)]
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in results)]
    figure, axis = plt.subplots(figsize=(1.8 * len(datasets) + 2, 3.6))
    width = 0.8 / len(methods)
    for j, method in enumerate(methods):
        for i, key in enumerate(datasets):
            values = [r["metrics"]["dice"] for r in results if r["dataset"] == key and r["method"] == method]
            if not values:
                continue
            x = i + (j - (len(methods) - 1) / 2) * width
            axis.bar(x, statistics.mean(values), width * 0.9, color=f"C{j}",
                     yerr=statistics.stdev(values) if len(values) > 1 else None, capsize=3,
                     label={"auto": "ReIsoSeg", "rma": "closest RMA", "nnunet": "nnU-Net v1"}[method] if i == 0
                     else None)
            axis.scatter([x] * len(values), values, color="k", s=8, zorder=3)
    axis.set_xticks(range(len(datasets)), datasets)
    axis.set_ylabel("mitochondria Dice (test)")
    axis.set_ylim(0, 1)
    axis.legend(frameon=False, fontsize=8)
    figure.tight_layout()
    figure.savefig(ROOT / "fig" / "quality_dice.png", dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, default=3.0, help="minutes of training per run (default: 3)")
    parser.add_argument("--iterations", type=int, default=None,
                        help="training iterations per run (default: derived from --budget)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (default: 0 1 2)")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=list(DATASETS))
    parser.add_argument("--methods", nargs="+", choices=["auto", "rma", "nnunet"], default=["auto", "nnunet"])
    parser.add_argument("--step_size", type=float, default=0.5, help="sliding-window step (default: 0.5)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    parser.add_argument("--work", type=Path, default=Path("/tmp/reisoseg_quality"),
                        help="tasks, models, predictions and cached run results (default: %(default)s)")
    args = parser.parse_args()
    if args.device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    work = args.work.resolve()
    workspace.use_folders(work)
    for key in args.datasets:
        dataset = DATASETS[key]
        task = dataset.prepare()
        if task is None:
            continue
        if not args.iterations:
            per_iteration = _seconds_per_iteration(task, dataset, work, args.device)
        epochs = _epochs(dataset, args, work)
        if not args.iterations:
            print(f"[{key}] {per_iteration:.2f} s per ReIsoSeg iteration -> {epochs * ITERATIONS_PER_EPOCH} "
                  f"iterations in {args.budget} min", flush=True)
        for seed in args.seeds:
            for method in args.methods:
                trainer = _closest_rma(task) if method == "rma" else METHODS[method]
                row = _run(dataset, task, method, trainer, seed, epochs, args, work)
                print(f"[{key}] {method} seed {seed}: Dice {row['metrics']['dice']:.3f} (train {row['train_s']:.0f} s,"
                      f" predict {row['predict_s']:.0f} s)", flush=True)
    results = _finished_runs(args, work)  # every dataset and seed run so far at these settings, not only these
    settings = {"machine": workspace.machine(), "budget_minutes": None if args.iterations else args.budget,
                "seeds": sorted({r["seed"] for r in results}), "step_size": args.step_size,
                "revision": workspace.git_revision(), "date": time.strftime("%Y-%m-%d")}
    (ROOT / "benchmarks" / "results" / "quality.json").write_text(
        json.dumps({"settings": settings, "runs": results}, indent=1))
    _write_report(results, settings)
    _plot(results)
    print(f"-> {ROOT / 'documentation' / 'results.md'}, {ROOT / 'fig' / 'quality_dice.png'}")


if __name__ == "__main__":
    main()
