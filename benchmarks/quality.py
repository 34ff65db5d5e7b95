"""ReIsoSeg against plain nnU-Net at equal iterations and at equal wall time, with convergence checked, on nnU-Net v1
(the default) or v2 (`--engine v2`).

For every dataset and seed, each method trains with the same derived plans (patch and batch size), the same number
of iterations, the same seed and the same data. nnU-Net's own intermediate checkpoints are kept every
SNAPSHOT_ITERATIONS; each of them and the final model predict the held-out test volumes (sliding window, no TTA)
and are scored by `reisoseg.evaluation` (Dice, IoU, HD95 in nm, instance F1@0.5 and AP-75):

- `auto`: ReIsoSegTrainer, pattern picked from the planned spacing;
- `rma`: the closest fixed trainer, ReIsoSegRMA{1,2,4,8}V6Trainer. It is the automatic choice by construction (same
  network, same seed): run it with `--methods auto rma nnunet` to spend budget confirming that;
- `nnunet`: nnU-Net v1's default trainer and Generic_UNet planned for the same patch, as `nnUNetTrainerV2EM`: the
  same training with our durable checkpoints (no ignore label here, no EM augmentation). Records whose trainer is
  `nnUNetTrainerV2` ran nnU-Net's trainer itself. On v2: v2's `nnUNetTrainer` and PlainConvUNet, as
  `nnUNetTrainerEM` (the same with our checkpoints and snapshots).

On v2 (quality_engines.V2) the tasks are written in v2's layout, planned by `nnUNetv2_plan_and_preprocess` and kept
in their own folders under --work; records go to benchmarks/results/quality_runs_v2/ and the tables to
quality_v2.md. The datasets that hold validation sections out are v1's only.

Runs survive the end of a session: `model_latest` is saved every CHECKPOINT_MINUTES, and a run whose fold holds one
continues from it (`-c`) when the command is started again with the same work folder. Training time is the sum of
the epochs' own times in nnU-Net's training logs (the last run of an epoch that was repeated after an interruption),
so start-up and interruptions do not count.

What the report shows, per dataset:
- equal iterations (the paper's view): the final models;
- equal wall time (the CPU user's view): the slower method's last snapshot that took no longer than the faster
  method's whole run, both at their idle pace (seconds per iteration over the run's fastest stretch between
  snapshots, so work beside the run does not move it). Snapshots come from a run whose learning rate had not
  yet decayed: a conservative stand-in for a shorter run;
- paired differences ReIsoSeg - nnU-Net over (seed, test volume) pairs: mean, bootstrap 95 % interval, wins;
- convergence: the mean validation pseudo-Dice (nnU-Net's online metric, on training-set patches) over the last
  10 % of epochs against the 10 % before; "converged" when they differ by less than CONVERGENCE_TOLERANCE;
- fig/quality_dice_vs_iterations.png: test Dice of every snapshot.

Test sets are used for no choice: no early stopping, no best-checkpoint picking (the final model is scored).
Datasets: synthetic tasks at z/xy ratios 1, 4 and 8; Gerhard 2013 mitochondria (sections 0-15 train, 16-19 test)
and CDeep3M mitochondria (training volume train, validation volume test) from ../shared/data (skipped with a
message when absent). Each finished run is one JSON record in benchmarks/results/quality_runs/ (committed, so a
later session or machine goes on from it); models and predictions live under --work.

    python benchmarks/quality.py --iterations 1000 --seeds 0 1 --datasets synth8 gerhard
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from reisoseg.devices import resolve_device
from reisoseg.nnunet_v1.training_options import TrainingOptions

sys.path.insert(0, str(Path(__file__).parent))
import workspace  # noqa: E402
from quality_engines import ENGINES, V1  # noqa: E402

DEFAULT_ENGINE = ENGINES["v1"]  # what callers that name no engine (instances.py) run on
ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
INSTANCE_RUNS = ROOT / "benchmarks" / "results" / "instance_runs"  # models trained on the instance target
INSTANCE_TASK_OFFSET = 200  # task id of a dataset's instance-target twin
ITERATIONS_PER_EPOCH = 10
VAL_ITERATIONS_PER_EPOCH = 2
SNAPSHOT_ITERATIONS = 250
CONVERGENCE_TOLERANCE = 0.02  # pseudo-Dice change between the last two 10 % windows of epochs
BOOTSTRAP_SAMPLES = 10000
CHECKPOINT_MINUTES = 2.0
BATCH_SIZE = 2
# the baseline's runs used nnUNetTrainerV2 or nnUNetTrainerV2EM (the same maths, our checkpoints); each run's own
# trainer is listed under "Runs that exist"
METHOD_NAMES = {"auto": "ReIsoSegTrainer", "rma": "closest RMA", "nnunet": "nnU-Net baseline"}
METRICS = (("dice", "Dice", True), ("hd95_nm", "HD95 (nm)", False), ("f1_50", "instance F1@0.5", True),
           ("ap_75", "AP-75", True), ("iou", "IoU", True))  # key, title, higher is better


@dataclass(frozen=True)
class Dataset:
    key: str
    task_id: int
    name: str
    patch: tuple[int, int, int]
    description: str
    instances: bool = False  # labels carry the instance target of mitochondria (background / interior / boundary)
    validation_sections: int = 0  # the last sections of every training volume, held out to calibrate the decoding

    def with_instance_target(self) -> Dataset:
        """The same volumes and split, trained on the instance target: object ids from the synthetic generator, 3D
        connected components of the labels for real data. Its test folder holds the reference objects."""
        return replace(self, key=f"{self.key}_instances", task_id=self.task_id + INSTANCE_TASK_OFFSET,
                       name=f"{self.name}Instances", instances=True)

    def records(self, engine: V1 = DEFAULT_ENGINE) -> Path:
        return INSTANCE_RUNS if self.instances else engine.runs

    @property
    def synthetic(self) -> bool:
        """Written by our generator, which knows the object ids; real data's objects are the labels' 3D connected
        components."""
        return self.key.startswith("synth")

    def scored_iterations(self, iterations: int) -> list[int]:
        """The snapshots to score: every SNAPSHOT_ITERATIONS for semantic runs (the figure and the equal-time view
        need them), only the final model for instance-target runs, whose tables compare final models (a real-data
        snapshot takes 6-11 minutes to predict on 2 cores)."""
        if self.instances:
            return [iterations]
        return list(range(SNAPSHOT_ITERATIONS, iterations + 1, SNAPSHOT_ITERATIONS))

    def prepare(self, engine: V1 = DEFAULT_ENGINE) -> str | None:
        """Write (once) and plan (once) the task; returns its name, or None if the data are missing."""
        raw = engine.raw_base()
        task = engine.task_name(self.task_id, self.name)
        if not (engine.raw_task_folder(task) / "dataset.json").is_file():
            if self.synthetic:
                from reisoseg.synthetic import make_synthetic_task

                ratio = int(self.key[len("synth"):].removesuffix("_instances"))
                make_synthetic_task(raw, self.task_id, self.name, num_training=SYNTH_TRAINING, num_test=SYNTH_TEST,
                                    shape=SYNTH_SHAPES[ratio], ratio=ratio, seed=synthetic_task_seed(ratio),
                                    overwrite=True, instances=self.instances, engine=engine.key)
            elif not self._convert_real(raw, engine.key):
                return None
            if self.validation_sections:
                self._hold_out_validation(task)
        engine.plan(self.task_id, task)
        return task

    def validation_folder(self, task: str) -> Path:
        """Held-out validation volumes: images/CASE_0000.nii.gz and instances/CASE.nii.gz (object ids)."""
        return raw_task_folder(task) / "validation"

    def _hold_out_validation(self, task: str) -> None:
        """Move the last `validation_sections` of every training case out of training, before planning. The
        references are the part's own 3D connected components, as the test references are."""
        from reisoseg.evaluation.instances import connected_instances
        from reisoseg.io.nifti import read_nifti, write_nifti

        task_folder, validation = raw_task_folder(task), self.validation_folder(task)
        for image_file in sorted((task_folder / "imagesTr").glob("*_0000.nii.gz")):
            case = image_file.name[:-len("_0000.nii.gz")]
            files = {"image": image_file, "labels": task_folder / "labelsTr" / f"{case}.nii.gz",
                     "instances": task_folder / "instancesTr" / f"{case}.nii.gz"}
            volumes = {kind: read_nifti(path) for kind, path in files.items() if path.is_file()}
            spacing = volumes["image"][1]
            cut = volumes["image"][0].shape[0] - self.validation_sections
            for kind, (array, _) in volumes.items():
                write_nifti(files[kind], array[:cut], spacing)
            objects = volumes["instances"][0][cut:] if "instances" in volumes else volumes["labels"][0][cut:]
            for sub in ("images", "instances"):
                (validation / sub).mkdir(parents=True, exist_ok=True)
            write_nifti(validation / "images" / image_file.name, volumes["image"][0][cut:], spacing)
            write_nifti(validation / "instances" / f"{case}.nii.gz", connected_instances(objects > 0).astype("uint32"),
                        spacing)

    def _convert_real(self, raw: str, engine: str) -> bool:
        from reisoseg.io.convert import LabelMapping, convert_to_task

        instance_class = "mitochondria" if self.instances else None
        if self.key.startswith("gerhard"):
            stack = SHARED_DATA / "gerhard2013_L3vnc_sstem" / "stack1"
            if not stack.is_dir():
                print(f"skipping {self.key}: {stack} not found", flush=True)
                return False
            convert_to_task([stack / "raw"], [stack / "labels"], task_id=self.task_id, name=self.name,
                            mapping=LabelMapping.parse(["mitochondria=191"]), spacing=(50, 4.6, 4.6),
                            test_sections=(16, 20), raw_data_base=raw, overwrite=True, instance_class=instance_class,
                            engine=engine)
            return True
        root = SHARED_DATA / "cdeep3m_mito_sbem"
        if not root.is_dir():
            print(f"skipping {self.key}: {root} not found", flush=True)
            return False
        convert_to_task([root / "training" / "images", root / "validation" / "images"],
                        [root / "training" / "labels", root / "validation" / "labels"], task_id=self.task_id,
                        name=self.name, mapping=LabelMapping.identity(["mitochondria"]), spacing=(40, 5.9, 5.9),
                        test_volumes=[1], raw_data_base=raw, overwrite=True, instance_class=instance_class,
                        engine=engine)
        return True


SYNTH_SHAPES = {1: (64, 96, 96), 4: (48, 128, 128), 8: (32, 160, 160)}
SYNTH_TRAINING, SYNTH_TEST = 6, 2  # volumes per synthetic task: the first 6 train, the last 2 test


def synthetic_task_seed(ratio: int) -> int:
    """One seed per ratio, so that no two synthetic datasets share a volume."""
    return 1000 + ratio


SYNTH_SPLIT = f"{SYNTH_TRAINING} train / {SYNTH_TEST} test"
DATASETS = {d.key: d for d in [
    Dataset("synth1", 511, "QualitySynth1", (32, 48, 48), f"synthetic, 5 x 5 x 5 nm (ratio 1), {SYNTH_SPLIT}"),
    Dataset("synth4", 514, "QualitySynth4", (16, 64, 64), f"synthetic, 20 x 5 x 5 nm (ratio 4), {SYNTH_SPLIT}"),
    Dataset("synth8", 518, "QualitySynth8", (16, 64, 64), f"synthetic, 40 x 5 x 5 nm (ratio 8), {SYNTH_SPLIT}"),
    Dataset("gerhard", 521, "QualityGerhard", (16, 64, 64),
            "Gerhard 2013 ssTEM, 50 x 4.6 x 4.6 nm, sections 0-15 train / 16-19 test"),
    Dataset("cdeep3m", 522, "QualityCDeep3M", (16, 64, 64),
            "CDeep3M SBEM, 40 x 5.9 x 5.9 nm, training volume train / validation volume test"),
    # training volumes deeper than the patch (the 16-section patch spans Gerhard's whole training part), and the
    # last 4 training sections held out to calibrate the object decoding
    Dataset("gerhard_p8", 523, "QualityGerhardP8", (8, 96, 96),
            "Gerhard 2013 ssTEM, 50 x 4.6 x 4.6 nm, sections 0-11 train / 12-15 validation / 16-19 test, "
            "patch 8 x 96 x 96", validation_sections=4),
    Dataset("cdeep3m_p8", 524, "QualityCDeep3MP8", (8, 96, 96),
            "CDeep3M SBEM, 40 x 5.9 x 5.9 nm, training volume sections 0-15 train / 16-19 validation, validation "
            "volume test, patch 8 x 96 x 96", validation_sections=4),
]}


def plans_identifier(seed: int) -> str:
    return f"nnUNetPlans_quality_seed{seed}"  # one output folder per seed (same plans)


def trainer_for(method: str, task: str, engine: V1 = DEFAULT_ENGINE) -> str:
    return _closest_rma(task, engine) if method == "rma" else engine.trainers[method]


def _closest_rma(task: str, engine: V1) -> str:
    from reisoseg.network.anisotropy import nearest_supported_ratio, ratio_from_spacing

    spacing = engine.planned_spacing(task)
    return f"ReIsoSegRMA{nearest_supported_ratio(ratio_from_spacing(spacing))}V6Trainer"


def record_path(dataset: Dataset, method: str, seed: int, iterations: int, step_size: float,
                engine: V1 = DEFAULT_ENGINE) -> Path:
    return dataset.records(engine) / f"{dataset.key}_{method}_seed{seed}_it{iterations}_step{step_size}.json"


def training_sessions(fold_folder: Path, engine: V1 = DEFAULT_ENGINE) -> int:
    """How many processes trained this fold: nnU-Net's training logs that hold an epoch (scoring a checkpoint
    writes a log too, with none)."""
    return sum(any(engine.epoch_started.search(line) for line in log.read_text().splitlines())
               for log in fold_folder.glob("training_log_*.txt"))


def epoch_seconds(fold_folder: Path, engine: V1 = DEFAULT_ENGINE) -> dict[int, float]:
    """Seconds each epoch took, from nnU-Net's training logs in the order they were written (their names carry
    the start time); an epoch repeated after an interruption counts once, with its last time."""
    seconds: dict[int, float] = {}
    for log in sorted(fold_folder.glob("training_log_*.txt")):
        epoch = None
        for line in log.read_text().splitlines():
            started = engine.epoch_started.search(line)
            took = engine.epoch_took.search(line)
            if started:
                epoch = int(started.group(1))
            elif took and epoch is not None:
                seconds[epoch] = float(took.group(1))
    return seconds


def convergence(pseudo_dice: list[float]) -> dict:
    """Mean of the last 10 % of epochs against the 10 % before (together the last 20 % of iterations)."""
    window = max(1, len(pseudo_dice) // 10)
    if len(pseudo_dice) < 2 * window:
        return {"converged": False, "reason": "too few epochs"}
    earlier = statistics.mean(pseudo_dice[-2 * window:-window])
    last = statistics.mean(pseudo_dice[-window:])
    return {"window_epochs": window, "earlier": earlier, "last": last, "change": last - earlier,
            "tolerance": CONVERGENCE_TOLERANCE, "converged": abs(last - earlier) < CONVERGENCE_TOLERANCE}


def raw_task_folder(task: str, engine: V1 = DEFAULT_ENGINE) -> Path:
    return engine.raw_task_folder(task)


def score_test_set(dataset: Dataset, task: str, trainer: str, plans: str, checkpoint: str, predictions: Path,
                   step_size: float, device: str | None, engine: V1 = DEFAULT_ENGINE) -> dict:
    """Semantic models are scored as users use them today (objects = 3D connected components); instance-target
    models decode their objects, which are scored against the task's reference objects."""
    raw = engine.raw_task_folder(task)
    return workspace.timed_scores(
        lambda: engine.predict(raw / "imagesTs", predictions, task, trainer, plans, checkpoint, step_size, device,
                               dataset.instances),
        raw / "labelsTs", predictions, raw / "instancesTs" if dataset.instances else None, dataset.instances)


def run(dataset: Dataset, task: str, method: str, trainer: str, seed: int, iterations: int,
        args: argparse.Namespace, engine: V1 = DEFAULT_ENGINE) -> dict:
    """Train, then score `dataset.scored_iterations` on the test set; one committed record per run."""
    record = record_path(dataset, method, seed, iterations, args.step_size, engine)
    if record.is_file():
        return json.loads(record.read_text())
    plans = plans_identifier(seed)
    fold_folder = engine.fold_folder(task, trainer, plans)
    if not engine.is_trained(fold_folder):
        resume = engine.can_resume(fold_folder)
        print(f"[{dataset.key}] {method} ({trainer}, {engine.title}) seed {seed}: {iterations} iterations"
              f"{' (continued)' if resume else ''}", flush=True)
        engine.train(task, trainer, dataset.patch, BATCH_SIZE, TrainingOptions(
            plans_identifier=plans, epochs=iterations // ITERATIONS_PER_EPOCH, continue_training=resume,
            iterations_per_epoch=ITERATIONS_PER_EPOCH, val_iterations_per_epoch=VAL_ITERATIONS_PER_EPOCH,
            run_validation=False, device=args.device, seed=seed, checkpoint_minutes=CHECKPOINT_MINUTES,
            snapshot_every_epochs=SNAPSHOT_ITERATIONS // ITERATIONS_PER_EPOCH))
    seconds = epoch_seconds(fold_folder, engine)
    train_s = sum(seconds.values())
    snapshots = []
    for at in dataset.scored_iterations(iterations):
        checkpoint = engine.checkpoint(at // ITERATIONS_PER_EPOCH, final=at == iterations)
        elapsed = sum(t for epoch, t in seconds.items() if epoch < at // ITERATIONS_PER_EPOCH)
        scored = score_test_set(dataset, task, trainer, plans, checkpoint,
                                args.work / "predictions" / record.stem / str(at), args.step_size, args.device,
                                engine)
        snapshots.append({"iterations": at, "train_s": elapsed, **scored})
        print(f"[{dataset.key}] {method} seed {seed} @ {at}: Dice {scored['metrics']['dice']:.3f}", flush=True)
    pseudo_dice = engine.pseudo_dice(fold_folder)
    result = {"dataset": dataset.key, "method": method, "trainer": trainer, "seed": seed, "iterations": iterations,
              "engine": engine.key,
              "patch": list(dataset.patch), "batch_size": BATCH_SIZE, "step_size": args.step_size, "train_s": train_s,
              "training_sessions": training_sessions(fold_folder, engine),
              "machine": workspace.machine(), "revision": workspace.git_revision(), "date": time.strftime("%Y-%m-%d"),
              "validation_pseudo_dice": pseudo_dice, "convergence": convergence(pseudo_dice),
              "snapshots": snapshots, "metrics": snapshots[-1]["metrics"], "per_case": snapshots[-1]["per_case"]}
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(result, indent=1))
    return result


def paired_summary(ours: list[dict], theirs: list[dict], metric: str, higher_is_better: bool,
                   seed: int = 0) -> dict | None:
    """Differences ours - theirs over (seed, test case) pairs of snapshots `{"seed", "per_case"}`: mean, bootstrap
    95 % interval (resampling pairs) and the fraction of pairs that ours wins."""
    by_seed = {s["seed"]: s for s in theirs}
    differences = []
    for snapshot in ours:
        other = by_seed.get(snapshot["seed"])
        for case, values in snapshot["per_case"].items() if other else ():
            a, b = values.get(metric, math.nan), other["per_case"].get(case, {}).get(metric, math.nan)
            if not (math.isnan(a) or math.isnan(b)):
                differences.append(a - b)
    if not differences:
        return None
    rng = random.Random(seed)
    means = sorted(statistics.fmean(rng.choices(differences, k=len(differences))) for _ in range(BOOTSTRAP_SAMPLES))
    wins = sum((d > 0) if higher_is_better else (d < 0) for d in differences)
    return {"mean": statistics.fmean(differences), "low": means[int(0.025 * BOOTSTRAP_SAMPLES)],
            "high": means[int(0.975 * BOOTSTRAP_SAMPLES) - 1], "wins": wins, "pairs": len(differences)}


def convergence_text(record: dict) -> str:
    """A run's convergence check as the tables print it, e.g. "yes (+0.004)"."""
    check = record["convergence"]
    change = f"{check['change']:+.3f}" if "change" in check else check.get("reason", "unknown")
    return f"{'yes' if check['converged'] else 'not converged'} ({change})"


def idle_seconds_per_iteration(run: dict) -> float:
    """Training seconds per iteration over the run's fastest stretch between snapshots: an estimate of its pace on
    an idle machine. Work beside a run (each record's `timing_note`) slows some stretches, often most of them, and
    its recorded sum takes in every slowdown; on the records whose notes estimate an idle time from the fastest
    epochs in the training logs, this agrees with the note to within about 5 %."""
    points = [(0, 0.0)] + [(s["iterations"], s["train_s"]) for s in run["snapshots"]]
    return min((t1 - t0) / (i1 - i0) for (i0, t0), (i1, t1) in zip(points, points[1:]))


def idle_train_s(run: dict, iterations: int | None = None) -> float:
    """Seconds the run's first `iterations` (default: all) take at its idle pace."""
    return (run["iterations"] if iterations is None else iterations) * idle_seconds_per_iteration(run)


def equal_time_snapshots(ours: dict, theirs: dict) -> tuple[dict, dict]:
    """The two runs' snapshots at equal wall time, each run at its idle pace: the slower run's last snapshot that
    takes no longer than the faster run's whole training (its first snapshot if none does)."""
    def at_time(run: dict, seconds: float) -> dict:
        fitting = [s for s in run["snapshots"] if idle_train_s(run, s["iterations"]) <= seconds]
        return fitting[-1] if fitting else run["snapshots"][0]

    ours_s, theirs_s = idle_train_s(ours), idle_train_s(theirs)
    if ours_s <= theirs_s:
        return ours["snapshots"][-1], at_time(theirs, ours_s)
    return at_time(ours, theirs_s), theirs["snapshots"][-1]


def _with_seed(snapshot: dict, run: dict) -> dict:
    return {"seed": run["seed"], **snapshot}


def _mean_sd(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def _paired_cell(summary: dict | None) -> str:
    if summary is None:
        return "n/a"
    return (f"{summary['mean']:+.3f} [{summary['low']:+.3f}, {summary['high']:+.3f}], "
            f"{summary['wins']}/{summary['pairs']}")


def _report_lines(results: list[dict]) -> list[str]:
    lines = []
    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in results)]
    for key in datasets:
        for iterations in sorted({r["iterations"] for r in results if r["dataset"] == key}):
            runs = [r for r in results if r["dataset"] == key and r["iterations"] == iterations]
            methods = [m for m in ("auto", "rma", "nnunet") if any(r["method"] == m for r in runs)]
            lines += [f"## {DATASETS[key].description}, {iterations} iterations", "",
                      "Mean ± sd over seeds of the per-run mean over test volumes; wall time of training on "
                      f"{runs[0]['machine']}: recorded (idle estimate: the run's fastest stretch between "
                      "snapshots, scaled to the whole run).", "",
                      "| method | seeds | train min (idle) | " + " | ".join(t for _, t, _ in METRICS)
                      + " | converged |",
                      "|---|---|---|" + "---|" * len(METRICS) + "---|"]
            for method in methods:
                mine = [r for r in runs if r["method"] == method]
                cells = [_mean_sd([r["metrics"].get(k, math.nan) for r in mine]) for k, _, _ in METRICS]
                converged = ", ".join(f"seed {r['seed']}: {convergence_text(r)}" for r in mine)
                lines.append(f"| {METHOD_NAMES[method]} | {', '.join(str(r['seed']) for r in mine)} | "
                             f"{_mean_sd([r['train_s'] / 60 for r in mine])} "
                             f"({_mean_sd([idle_train_s(r) / 60 for r in mine])}) | "
                             + " | ".join(cells)
                             + f" | {converged} |")
            ours = {r["seed"]: r for r in runs if r["method"] == "auto"}
            theirs = {r["seed"]: r for r in runs if r["method"] == "nnunet"}
            seeds = sorted(set(ours) & set(theirs))
            if seeds:
                views = {"equal iterations": ([_with_seed(ours[s]["snapshots"][-1], ours[s]) for s in seeds],
                                              [_with_seed(theirs[s]["snapshots"][-1], theirs[s]) for s in seeds])}
                timed = [equal_time_snapshots(ours[s], theirs[s]) for s in seeds]
                views["equal wall time"] = ([_with_seed(a, ours[s]) for s, (a, _) in zip(seeds, timed)],
                                            [_with_seed(b, theirs[s]) for s, (_, b) in zip(seeds, timed)])
                lines += ["", "Paired ReIsoSeg − nnU-Net over (seed, test volume) pairs: mean difference "
                          "[bootstrap 95 % interval], pairs ReIsoSeg wins / pairs (HD95: lower wins).", "",
                          "| view | iterations ReIsoSeg / nnU-Net | " + " | ".join(t for _, t, _ in METRICS[:4])
                          + " |", "|---|---|" + "---|" * 4]
                for view, (mine, other) in views.items():
                    cells = [_paired_cell(paired_summary(mine, other, k, higher)) for k, _, higher in METRICS[:4]]
                    counts = ", ".join(f"{a['iterations']}/{b['iterations']}" for a, b in zip(mine, other))
                    lines.append(f"| {view} | {counts} | " + " | ".join(cells) + " |")
            lines.append("")
    return lines


def _write_report(results: list[dict], engine: V1) -> None:
    cells = sorted({(r["dataset"], r["trainer"], r["seed"], r["iterations"]) for r in results})
    flag = "" if engine.key == "v1" else f" --engine {engine.key}"
    lines = [f"# ReIsoSeg against {engine.title}: every run", "",
             f"Written by `benchmarks/quality.py{flag}` from the run records in `benchmarks/results/"
             f"{engine.runs.name}/`; rerun it (`--report_only`) to reproduce. Each run: same derived plans (patch, "
             f"batch {BATCH_SIZE}), same iterations, same seed, same data; sliding window without TTA; test sets "
             "used for no choice. Convergence: validation "
             f"pseudo-Dice over the last 10 % of epochs against the 10 % before, tolerance {CONVERGENCE_TOLERANCE}.",
             "", "Runs that exist: " + "; ".join(f"{d} {t} seed {s} ({i} it)" for d, t, s, i in cells)
             + ".", "", *_report_lines(results),
             f"![test Dice against iterations](../../fig/{engine.figure.name})", ""]
    engine.report.write_text("\n".join(lines))


def _plot(results: list[dict], engine: V1) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in results)]
    figure, axes = plt.subplots(1, len(datasets), figsize=(3.6 * len(datasets), 3.2), squeeze=False)
    for axis, key in zip(axes[0], datasets):
        for color, method in enumerate(("auto", "rma", "nnunet")):
            for index, run in enumerate(r for r in results if r["dataset"] == key and r["method"] == method):
                axis.plot([s["iterations"] for s in run["snapshots"]],
                          [s["metrics"]["dice"] for s in run["snapshots"]], "o-", color=f"C{color}",
                          alpha=0.8, label=f"{METHOD_NAMES[method]}" if index == 0 else None)
        axis.set_title(key)
        axis.set_xlabel("training iterations")
        axis.set_ylabel("test Dice (mitochondria)")
        axis.set_ylim(0, 1)
        axis.legend(frameon=False, fontsize=8)
    figure.tight_layout()
    figure.savefig(engine.figure, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=1000,
                        help=f"training iterations per run, a multiple of {SNAPSHOT_ITERATIONS} (default: 1000)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="seeds (default: 0 1)")
    parser.add_argument("--datasets", nargs="+", choices=list(DATASETS), default=["synth8", "gerhard"])
    parser.add_argument("--methods", nargs="+", choices=["auto", "rma", "nnunet"], default=["auto", "nnunet"])
    parser.add_argument("--step_size", type=float, default=0.5, help="sliding-window step (default: 0.5)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    parser.add_argument("--engine", choices=list(ENGINES), default="v1",
                        help="the nnU-Net both networks train on (default: %(default)s)")
    parser.add_argument("--patch", type=int, nargs=3, default=None,
                        help="training patch for every dataset, with --results (default: each dataset's own)")
    parser.add_argument("--results", type=Path, default=None,
                        help="records, tables and figure go here (default: the committed ones in benchmarks/results)")
    parser.add_argument("--prepare_only", action="store_true",
                        help="only write and plan the datasets' tasks (before runs that start side by side)")
    parser.add_argument("--report_only", action="store_true", help="only rewrite the report from the records")
    parser.add_argument("--work", type=Path, default=Path("/tmp/reisoseg_quality"),
                        help="tasks, models and predictions (default: %(default)s)")
    args = parser.parse_args()
    if args.iterations % SNAPSHOT_ITERATIONS:
        parser.error(f"--iterations must be a multiple of {SNAPSHOT_ITERATIONS}")
    if args.patch and not args.results:
        parser.error("--patch needs --results: the committed records hold each dataset's own patch")
    engine = ENGINES[args.engine]
    held_out = [key for key in args.datasets if DATASETS[key].validation_sections]
    if engine.key != "v1" and held_out and not args.report_only:
        parser.error(f"{', '.join(held_out)}: validation sections are held out on the v1 engine only")
    args.work = args.work.resolve()
    engine.use_folders(args.work)
    if args.results:
        args.results.mkdir(parents=True, exist_ok=True)
        engine.use_results(args.results.resolve())
    resolve_device(args.device)  # before nnU-Net starts: cpu hides the GPUs from it
    for key in [] if args.report_only else args.datasets:
        dataset = DATASETS[key] if args.patch is None else replace(DATASETS[key], patch=tuple(args.patch))
        task = dataset.prepare(engine)
        if task is None or args.prepare_only:
            continue
        for seed in args.seeds:  # seed-major: each finished pair is a comparison on its own
            for method in args.methods:
                result = run(dataset, task, method, trainer_for(method, task, engine), seed, args.iterations, args,
                             engine)
                print(f"[{key}] {method} seed {seed}: Dice {result['metrics']['dice']:.3f} "
                      f"(train {result['train_s']:.0f} s)", flush=True)
    if args.prepare_only:
        return
    results = [json.loads(p.read_text()) for p in sorted(engine.runs.glob("*.json"))]
    if not results:
        print("no finished runs yet")
        return
    engine.summary.write_text(json.dumps({"runs": results}, indent=1))
    _write_report(results, engine)
    _plot(results, engine)
    print(f"-> {engine.report}, {engine.figure}")


if __name__ == "__main__":
    main()
