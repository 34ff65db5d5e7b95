"""Training on the data EM users have, measured in one run: sparse annotation and section-defect augmentation.

Synthetic ratio-8 data (the quality benchmark's `synth8`: 6 training and 2 test volumes of 32 x 160 x 160 voxels at
40 x 5 x 5 nm), ReIsoSegTrainer, patch 16 x 64 x 64, batch 2, the same iterations and seed for every run:

- `full`: every section of the training volumes labelled;
- `sparse`: only every 4th section labelled (sections 0, 4, 8, ...; the others get the `ignore` label, as
  `reisoseg convert --annotated-sections` writes it): a quarter of the annotation work;
- `full_em_augmentation`: full labels, trained with `--em_augmentation` (missing, shifted, blurred and
  contrast-jumping sections).

Scored (final model, sliding window, no TTA, `reisoseg.evaluation`) on the clean test volumes and on a defective test
set: the same generator with its defect settings turned up (`DEFECTIVE`: misalignment, gain drift and defective
sections). Targets: sparse within 0.05 Dice of full at equal iterations; the augmented model better on the
defective volumes and not worse on the clean ones. Each finished run is one record in
benchmarks/results/sparse_and_defects_runs/ (committed); models and predictions live under --work.

    python benchmarks/sparse_and_defects.py --iterations 500
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import quality  # noqa: E402
import workspace  # noqa: E402

from reisoseg.devices import resolve_device  # noqa: E402
from reisoseg.layout import DEFAULT_CONFIGURATION, FINAL_CHECKPOINT, IGNORE_LABEL_NAME, plans_file  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "benchmarks" / "results" / "sparse_and_defects_runs"
TRAINER = "ReIsoSegTrainer"
SPARSE_TASK_ID, SPARSE_NAME = 532, "SparseSynth8"
ANNOTATE_EVERY = 4
DEFECTIVE = {"misalignment_px": 3.0, "gain_drift": 0.15, "defect_probability": 0.3}  # defaults: 1.0, 0.03, 0.03
DEFECTIVE_SEED = 7008
RUN_SETTINGS = {"full": (False, False), "sparse": (True, False), "full_em_augmentation": (False, True)}


def sparse_task(full_task: str) -> str:
    """The full task with every section but each `ANNOTATE_EVERY`-th labelled `ignore` (written and planned once)."""
    from reisoseg.io.nifti import read_nifti, write_nifti
    from reisoseg.nnunet_v1.plans import plan_and_preprocess

    raw = Path(os.environ["nnUNet_raw_data_base"]) / "nnUNet_raw_data"
    name = f"Task{SPARSE_TASK_ID:03d}_{SPARSE_NAME}"
    if not (raw / name / "dataset.json").is_file():
        staging = raw / f".{name}"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(raw / full_task, staging)
        dataset = json.loads((staging / "dataset.json").read_text())
        ignore = max(int(k) for k in dataset["labels"]) + 1
        for path in (staging / "labelsTr").glob("*.nii.gz"):
            labels, spacing = read_nifti(path)
            unannotated = [z for z in range(labels.shape[0]) if z % ANNOTATE_EVERY]
            labels[unannotated] = ignore
            write_nifti(path, labels, spacing)
        dataset["labels"][str(ignore)] = IGNORE_LABEL_NAME
        dataset["name"] = SPARSE_NAME
        (staging / "dataset.json").write_text(json.dumps(dataset, indent=1))
        staging.rename(raw / name)
    if not plans_file(os.environ["nnUNet_preprocessed"], name).is_file():
        plan_and_preprocess(SPARSE_TASK_ID)
    return name


def defective_test_set(folder: Path) -> tuple[Path, Path]:
    """Two volumes like the test volumes, with the generator's defects turned up: (images, labels) folders."""
    from reisoseg.io.nifti import write_nifti
    from reisoseg.synthetic import SynthParams, generate_volume
    from reisoseg.synthetic.task import select_classes

    images, labels = folder / "images", folder / "labels"
    if not labels.is_dir():
        staging = folder.with_name(f".{folder.name}")
        shutil.rmtree(staging, ignore_errors=True)
        params = dataclasses.replace(SynthParams(), **DEFECTIVE)
        for sub in ("images", "labels"):
            (staging / sub).mkdir(parents=True)
        for index in range(2):
            volume = generate_volume(quality.SYNTH_SHAPES[8], 8, seed=DEFECTIVE_SEED + index, params=params)
            write_nifti(staging / "images" / f"defective_{index:03d}_0000.nii.gz", volume.image, volume.spacing)
            write_nifti(staging / "labels" / f"defective_{index:03d}.nii.gz",
                        select_classes(volume.labels, ["mitochondria"]), volume.spacing)
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return images, labels


def run(name: str, task: str, full_task: str, defective: tuple[Path, Path], args: argparse.Namespace) -> dict:
    """Train one setting, score it on the clean and the defective test volumes; one committed record."""
    from reisoseg.nnunet_v1.plans import write_derived_plans
    from reisoseg.nnunet_v1.training import run_training
    from reisoseg.nnunet_v1.training_options import TrainingOptions

    record = RUNS / f"{name}_seed{args.seed}_it{args.iterations}.json"
    if record.is_file():
        return json.loads(record.read_text())
    sparse, em_augmentation = RUN_SETTINGS[name]
    plans = f"nnUNetPlans_sparse_defects_{name}"  # one model folder per setting
    write_derived_plans(task, plans, patch_size=quality.DATASETS["synth8"].patch, batch_size=2)
    print(f"[{name}] {args.iterations} iterations", flush=True)
    start = time.time()
    run_training(DEFAULT_CONFIGURATION, TRAINER, task, "all", TrainingOptions(
        plans_identifier=plans, epochs=args.iterations // quality.ITERATIONS_PER_EPOCH,
        iterations_per_epoch=quality.ITERATIONS_PER_EPOCH, val_iterations_per_epoch=quality.VAL_ITERATIONS_PER_EPOCH,
        run_validation=False, device=args.device, seed=args.seed, em_augmentation=em_augmentation))
    train_s = time.time() - start
    raw = Path(os.environ["nnUNet_raw_data_base"]) / "nnUNet_raw_data" / full_task
    scores = {}
    for test_set, (images, labels) in {"clean": (raw / "imagesTs", raw / "labelsTs"), "defective": defective}.items():
        scores[test_set] = workspace.score_model(images, labels, task, TRAINER, plans, FINAL_CHECKPOINT,
                                                 args.work / "predictions" / name / test_set, 0.5, args.device)
        print(f"[{name}] {test_set} test Dice {scores[test_set]['metrics']['dice']:.3f}", flush=True)
    result = {"run": name, "trainer": TRAINER, "sparse_every": ANNOTATE_EVERY if sparse else 1,
              "em_augmentation": em_augmentation, "seed": args.seed, "iterations": args.iterations,
              "patch": list(quality.DATASETS["synth8"].patch), "batch_size": 2, "train_s": train_s,
              "defective_settings": DEFECTIVE, "machine": workspace.machine(), "revision": workspace.git_revision(),
              "date": time.strftime("%Y-%m-%d"), "scores": scores}
    RUNS.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(result, indent=1))
    return result


def report(results: dict[str, dict]) -> list[str]:
    """The table and the two comparisons the issue asks for, from whichever runs exist."""
    def dice(name: str, test_set: str) -> float | None:
        return results[name]["scores"][test_set]["metrics"]["dice"] if name in results else None

    lines = ["| run | sections labelled | train min | Dice clean test | Dice defective test |", "|---|---|---|---|---|"]
    for name, result in results.items():
        labelled = "all" if result["sparse_every"] == 1 else f"1 in {result['sparse_every']}"
        lines.append(f"| {name} | {labelled} | {result['train_s'] / 60:.0f} | {dice(name, 'clean'):.3f} | "
                     f"{dice(name, 'defective'):.3f} |")
    if dice("full", "clean") is not None and dice("sparse", "clean") is not None:
        gap = dice("sparse", "clean") - dice("full", "clean")
        lines.append(f"\nsparse - full, clean test: {gap:+.3f} Dice (target: within 0.05) with a quarter of the "
                     f"sections labelled")
    if dice("full", "clean") is not None and dice("full_em_augmentation", "clean") is not None:
        defective, clean = (dice("full_em_augmentation", t) - dice("full", t) for t in ("defective", "clean"))
        lines.append(f"augmented - plain: defective test {defective:+.3f}, clean test {clean:+.3f} Dice (target: "
                     f"better on defective, not worse on clean)")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=500,
                        help=f"training iterations per run, a multiple of {quality.ITERATIONS_PER_EPOCH} "
                             f"(default: 500)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", nargs="+", choices=list(RUN_SETTINGS), default=list(RUN_SETTINGS))
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    parser.add_argument("--report_only", action="store_true", help="only print the table from the records")
    parser.add_argument("--work", type=Path, default=Path("/tmp/reisoseg_sparse_defects"),
                        help="tasks, models and predictions (default: %(default)s)")
    args = parser.parse_args()
    if args.iterations % quality.ITERATIONS_PER_EPOCH:
        parser.error(f"--iterations must be a multiple of {quality.ITERATIONS_PER_EPOCH}")
    args.work = args.work.resolve()
    workspace.use_folders(args.work)
    resolve_device(args.device)  # before nnU-Net starts: cpu hides the GPUs from it
    results = {}
    if not args.report_only:
        full_task = quality.DATASETS["synth8"].prepare()
        tasks = {"full": full_task, "sparse": sparse_task(full_task), "full_em_augmentation": full_task}
        defective = defective_test_set(args.work / "defective_test")
        for name in args.runs:
            results[name] = run(name, tasks[name], full_task, defective, args)
    for path in sorted(RUNS.glob(f"*_seed{args.seed}_it{args.iterations}.json")):
        result = json.loads(path.read_text())
        results.setdefault(result["run"], result)
    if results:
        (ROOT / "benchmarks" / "results" / "sparse_and_defects.json").write_text(json.dumps(results, indent=1))
        print("\n".join(report(results)))


if __name__ == "__main__":
    main()
