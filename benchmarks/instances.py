"""Objects, two questions: how good (`quality`) and what they cost (`cost`).

`quality`: on the quality benchmark's datasets (synthetic ratios 4 and 8, Gerhard, CDeep3M; see
quality.py), for ReIsoSeg and nnU-Net alike at equal iterations, seed and patch, compares
  (a) connected components: 3D components of a plain semantic model's mask, which is what users did before;
  (b) instance pipeline: a model trained on the instance target (background / interior / boundary), decoded into
      objects by the seeded watershed.
(a) reuses quality.py's semantic runs (same work folder and records; trained if missing), (b) trains the same
method on the dataset's instance-target twin (same volumes and split; object ids from the generator, 3D connected
components of the labels for real data, where touching objects stay merged in the target and in the reference). Both
are scored against the same reference objects: AP-50 / AP-75 with scores (connected components score 1 each, so
their AP is a plain precision-recall point), F1@0.5, VOI split / merge, adjusted Rand index, count error
|found - true| / true, and Dice. Records: benchmarks/results/instance_runs/ (committed; a later session goes on
from them); summary: benchmarks/results/instances_quality.json and the tables in benchmarks/results/instances.md.

    python benchmarks/instances.py quality --iterations 1000 --seeds 0 --datasets synth8 gerhard
    python benchmarks/instances.py quality --report_only     (the summary and tables of every committed cell)

`cost`: blockwise `segment --instances` against semantic-only `segment`, wall time, CPU time (user + system, which a
busy machine disturbs less than wall time) and peak memory, medians of interleaved repeats. Targets:
instance segmentation costs <= 1.3x the wall time of semantic segmentation, and its peak memory does not grow with
the volume. Both runs use the same model, volume, blocks and sliding-window settings, each in a fresh process (peak
RSS sampled over the process tree, `workspace.PeakMemory`). The model must be trained on an instance target (its
weights set how many objects there are to decode): by default the demo's (`reisoseg demo` first), or any with
`--model`. Volumes are tiled from one synthetic EM volume as in bench_blockwise.py. Writes
benchmarks/results/instances.json (or `--record`). `--instances_only` skips the semantic runs: peak memory against
volume size in half the time, with no ratio.

    python benchmarks/instances.py cost [--sizes 0.005 0.02] [--block 32 256 256]
                                        [--model MODEL_FOLDER]   (default: the demo's model)
                                        [--instances_only] [--record FILE]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from reisoseg.demo import demo_model_folder

sys.path.insert(0, str(Path(__file__).parent))
import bench_blockwise  # noqa: E402
import quality  # noqa: E402
import workspace  # noqa: E402


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def _measure(args: argparse.Namespace) -> dict:
    import torch

    import reisoseg

    start, cpu_start = time.perf_counter(), _cpu_seconds()
    with workspace.PeakMemory() as memory:
        reisoseg.segment(args.input, model=args.model, output=args.output, folds=["all"], block=args.block,
                         step_size=args.step_size, tta=False, device="cpu", overwrite=True, progress=False,
                         instances=args.measure == "instances")
    result = {"wall_s": time.perf_counter() - start, "cpu_s": _cpu_seconds() - cpu_start,
              "peak_rss_gib": memory.peak_gib, "torch_threads": torch.get_num_threads()}
    if args.measure == "instances":
        import zarr

        result["objects"] = len(zarr.open_group(args.output, mode="r").attrs["reisoseg"]["scores"])
    return result


QUALITY_METRICS = (("ap_50", "AP-50"), ("ap_75", "AP-75"), ("f1_50", "F1@0.5"), ("voi_split", "VOI split"),
                   ("voi_merge", "VOI merge"), ("ari", "ARI"), ("count_error", "count error"), ("dice", "Dice"))
PIPELINES = {"connected_components": "connected components", "instances": "instance pipeline",
             "calibrated": "instance pipeline, calibrated decoding"}
ERROR_KINDS = (("false_objects", "false"), ("missed_objects", "missed"), ("merges", "merged"), ("splits", "split"))
COST_KINDS = ("semantic", "instances")  # the two `segment` runs the cost benchmark compares
REPORT = Path(__file__).parent / "results" / "instances.md"  # the tables documentation/instances.md links to


def _per_case_rows(scored: dict) -> dict[str, dict]:
    """Per test volume metrics plus the relative count error."""
    return {case: {**values, "count_error": abs(values["predicted_instances"] - values["reference_instances"])
                   / max(values["reference_instances"], 1)} for case, values in scored["per_case"].items()}


def _connected_components(semantic_dataset: quality.Dataset, semantic_task: str, instance_task: str, method: str,
                          seed: int, args: argparse.Namespace) -> dict:
    """(a): the final semantic model's test predictions, objects as 3D connected components, against the instance
    task's reference objects. Cached beside the instance runs. On real data the semantic record already holds
    them, so its model need not be kept (models trained on the shared data stay on the machine that trained them)."""
    semantic_record = quality.record_path(semantic_dataset, method, seed, args.iterations, args.step_size)
    record = quality.INSTANCE_RUNS / f"{semantic_record.stem}_connected_components.json"
    if record.is_file():
        return json.loads(record.read_text())
    from reisoseg.io.volume import open_volume
    from reisoseg.layout import FINAL_CHECKPOINT

    semantic_raw, instance_raw = quality.raw_task_folder(semantic_task), quality.raw_task_folder(instance_task)
    for labels in sorted((semantic_raw / "labelsTs").glob("*.nii.gz")):  # the twins must hold the same test volumes
        if not (open_volume(labels).read() == open_volume(instance_raw / "labelsTs" / labels.name).read()).all():
            raise SystemExit(f"{labels.name}: test labels of {semantic_task} and {instance_task} differ; delete "
                             f"{instance_raw} to write the instance task again")
    predictions = args.work / "predictions" / semantic_record.stem / str(args.iterations)
    if not semantic_dataset.synthetic:  # reference objects are the labels' 3D connected components, as in the
        final = json.loads(semantic_record.read_text())  # semantic run's own scoring: its record holds (a)
        scored = {"metrics": final["metrics"], "per_case": final["per_case"]}
    elif len(list(predictions.glob("*.nii.gz"))) == len(list((semantic_raw / "labelsTs").glob("*.nii.gz"))):
        scored = workspace.score_predictions(semantic_raw / "labelsTs", predictions, instance_raw / "instancesTs")
    else:  # the record came from another work folder or machine: predict again with the model, if it is here
        trainer = quality.trainer_for(method, semantic_task)
        try:
            scored = workspace.score_model(semantic_raw / "imagesTs", semantic_raw / "labelsTs", semantic_task,
                                           trainer, quality.plans_identifier(seed), FINAL_CHECKPOINT,
                                           args.work / "predictions" / record.stem, args.step_size, args.device,
                                           reference_instances=instance_raw / "instancesTs")
        except FileNotFoundError as error:
            raise SystemExit(f"{semantic_record.name}: neither its predictions nor its model are in {args.work} "
                             f"({error}); pass the work folder it was trained in") from None
    result = {"semantic_record": semantic_record.name, **scored}
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps(result, indent=1))
    return result


def _summary(rows: list[dict]) -> dict:
    """Mean over seeds and test volumes per dataset, method and pipeline."""
    summary: dict = {}
    for row in rows:
        for pipeline, cases in row["pipelines"].items():
            cell = summary.setdefault(row["dataset"], {}).setdefault(row["method"], {}).setdefault(
                pipeline, {"cases": [], "seeds": [], "converged": []})
            cell["cases"] += list(cases.values())
            cell["seeds"].append(row["seed"])
            cell["converged"].append(f"seed {row['seed']}: {row['converged'][pipeline]}")
    for methods in summary.values():
        for pipelines in methods.values():
            for cell in pipelines.values():
                cases = cell.pop("cases")
                cell["volumes"] = len(cases)
                cell["objects_found"] = statistics.mean(c["predicted_instances"] for c in cases)
                cell["objects_true"] = statistics.mean(c["reference_instances"] for c in cases)
                cell.update({key: statistics.mean(c[key] for c in cases) for key, _ in QUALITY_METRICS})
                cell.update({key: statistics.mean(c[key] for c in cases) for key, _ in ERROR_KINDS
                             if all(key in c for c in cases)})  # records older than the error counts lack them
    return summary


def _tables(summary: dict, iterations: int) -> list[str]:
    lines = []
    for dataset, methods in summary.items():
        seeds = sorted({s for m in methods.values() for c in m.values() for s in c["seeds"]})
        lines += ["", f"### {dataset}: {iterations} iterations, seeds {', '.join(map(str, seeds))}", "",
                  "| method | objects from | found / true | " + " | ".join(t for _, t in QUALITY_METRICS)
                  + " | false / missed / merged / split per volume | model converged |",
                  "|---|---|---|" + "---|" * (len(QUALITY_METRICS) + 2)]
        for method, pipelines in methods.items():
            for pipeline, cell in pipelines.items():
                errors = " / ".join(f"{cell[key]:.1f}" for key, _ in ERROR_KINDS) \
                    if all(key in cell for key, _ in ERROR_KINDS) else "not recorded"
                lines.append(f"| {method} | {PIPELINES[pipeline]} | {cell['objects_found']:.1f} / "
                             f"{cell['objects_true']:.1f} | "
                             + " | ".join(f"{cell[key]:.3f}" for key, _ in QUALITY_METRICS)
                             + f" | {errors} | {', '.join(cell['converged'])} |")
    return lines


def _rows_from_records(iterations: int, step_size: float) -> list[dict]:
    """Every committed instance run, with its connected-components cell where that and its semantic run exist, and
    its calibrated decoding where the dataset holds validation volumes."""
    rows = []
    for key, semantic_dataset in quality.DATASETS.items():
        for record in sorted(quality.INSTANCE_RUNS.glob(f"{key}_instances_*_it{iterations}_step{step_size}.json")):
            decoded = json.loads(record.read_text())
            converged = quality.convergence_text(decoded)
            pipelines = {"instances": _per_case_rows(decoded)}
            if "calibrated" in decoded:
                pipelines["calibrated"] = _per_case_rows(decoded["calibrated"])
            semantic_record = quality.record_path(semantic_dataset, decoded["method"], decoded["seed"], iterations,
                                                  step_size)
            connected = quality.INSTANCE_RUNS / f"{semantic_record.stem}_connected_components.json"
            semantic_converged = None
            if semantic_record.is_file() and connected.is_file():
                pipelines = {"connected_components": _per_case_rows(json.loads(connected.read_text())), **pipelines}
                semantic_converged = quality.convergence_text(json.loads(semantic_record.read_text()))
            rows.append({"dataset": key, "method": quality.METHOD_NAMES[decoded["method"]], "seed": decoded["seed"],
                         "pipelines": pipelines,
                         "converged": {pipeline: semantic_converged if pipeline == "connected_components"
                                       else converged for pipeline in pipelines}})
    return rows


def _run_cells(args: argparse.Namespace) -> None:
    """Train and score what is missing for the requested cells (records are reused)."""
    from reisoseg.devices import resolve_device

    args.work = args.work.resolve()
    workspace.use_folders(args.work)
    resolve_device(args.device)  # before nnU-Net starts
    for key in args.datasets:
        semantic_dataset = quality.DATASETS[key]
        instance_dataset = semantic_dataset.with_instance_target()
        semantic_task, instance_task = semantic_dataset.prepare(), instance_dataset.prepare()
        if semantic_task is None or instance_task is None:
            continue
        for seed in args.seeds:
            for method in args.methods:
                decoded = quality.run(instance_dataset, instance_task, method,
                                      quality.trainer_for(method, instance_task), seed, args.iterations, args)
                print(f"[{key}] {method} seed {seed}: F1@0.5 {decoded['metrics']['f1_50']:.3f} (instance pipeline)",
                      flush=True)
                if instance_dataset.validation_sections:
                    calibrated = _calibrated(instance_dataset, instance_task, method, seed, args)["calibrated"]
                    print(f"[{key}] {method} seed {seed}: F1@0.5 {calibrated['metrics']['f1_50']:.3f} (calibrated "
                          f"decoding)", flush=True)
                if args.skip_connected_components:
                    continue
                quality.run(semantic_dataset, semantic_task, method, quality.trainer_for(method, semantic_task), seed,
                            args.iterations, args)  # (a)'s model: quality.py's run, trained here if missing
                connected = _connected_components(semantic_dataset, semantic_task, instance_task, method,
                                                  seed, args)
                print(f"[{key}] {method} seed {seed}: F1@0.5 {connected['metrics']['f1_50']:.3f} (connected "
                      f"components)", flush=True)


def _calibrated(dataset: quality.Dataset, task: str, method: str, seed: int, args: argparse.Namespace) -> dict:
    """Calibrate the run's decoding on the dataset's validation volumes with `reisoseg calibrate-instances`, then
    score the test volumes again with it; kept in the run's record under "calibrated" (the record's own metrics
    stay those of the trained decoding)."""
    from reisoseg.layout import DEFAULT_CONFIGURATION, FINAL_CHECKPOINT
    from reisoseg.nnunet_v1.training_options import fold_output_folder

    record_file = quality.record_path(dataset, method, seed, args.iterations, args.step_size)
    record = json.loads(record_file.read_text())
    if "calibrated" in record:
        return record
    trainer, plans = quality.trainer_for(method, task), quality.plans_identifier(seed)
    model = fold_output_folder(DEFAULT_CONFIGURATION, trainer, task, "all", plans).parent
    validation = dataset.validation_folder(task)
    command = [sys.executable, "-m", "reisoseg.commands.main", "calibrate-instances", str(model), "-f", "all",
               "--images", str(validation / "images"), "--references", str(validation / "instances")]
    started = time.perf_counter()
    subprocess.run(command + (["--device", args.device] if args.device else []), check=True)
    calibrate_s = time.perf_counter() - started
    scored = quality.score_test_set(dataset, task, trainer, plans, FINAL_CHECKPOINT,
                                    args.work / "predictions" / f"{record_file.stem}_calibrated", args.step_size,
                                    args.device)
    calibration = json.loads((model / "instances.json").read_text())["calibration"]
    record["calibrated"] = {"calibration": calibration, "calibrate_s": calibrate_s, **scored}
    record_file.write_text(json.dumps(record, indent=1))
    return record


def quality_benchmark(args: argparse.Namespace) -> None:
    """Run the requested cells, then rewrite the summary and the tables from every committed cell."""
    if not args.report_only:
        _run_cells(args)
    rows = _rows_from_records(args.iterations, args.step_size)
    summary = _summary(rows)
    results = Path(__file__).parent / "results" / "instances_quality.json"
    results.write_text(json.dumps({"iterations": args.iterations, "step_size": args.step_size, "summary": summary,
                                   "runs": rows}, indent=1))
    lines = _tables(summary, args.iterations)
    print("\n".join(lines))
    REPORT.write_text("# Objects across datasets: every cell\n\n" + "\n".join(lines) + "\n")
    print(f"-> {results}, {REPORT}")


def cost_benchmark(args: argparse.Namespace) -> None:
    if not (args.model / "instances.json").is_file():
        raise SystemExit(f"{args.model}: not a model trained on an instance target (run `reisoseg demo` or pass "
                         f"--model)")
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    kinds = COST_KINDS[1:] if args.instances_only else COST_KINDS
    rows = []
    for size in sorted(args.sizes):
        shape = workspace.tiled_volume_shape(size)
        volume = args.work / f"volume_{shape[1]}.zarr"
        workspace.write_tiled_volume(volume, shape)
        for repeat in range(args.repeats):  # interleaved, so that a busy spell of the machine hits both kinds
            for kind in kinds:
                print(f"{kind} {shape} ({math.prod(shape) / 1e9:.3f} Gvoxel), run {repeat + 1}/{args.repeats} ...",
                      flush=True)
                measured = bench_blockwise.in_fresh_process(__file__, kind, "cost", input=volume,
                                                            output=args.work / f"{kind}.zarr",
                                                            model=args.model.resolve(), block=args.block,
                                                            step_size=args.step_size)
                rows.append({"kind": kind, "shape": shape, "voxels": math.prod(shape), "repeat": repeat, **measured})
    print(f"\n{'kind':10s} {'shape':>18s} {'Gvoxel':>7s} {'wall s':>8s} {'CPU s':>8s} {'peak RSS GiB':>12s} "
          f"{'objects':>8s}")
    for row in rows:
        print(f"{row['kind']:10s} {str(tuple(row['shape'])):>18s} {row['voxels'] / 1e9:7.3f} {row['wall_s']:8.1f} "
              f"{row['cpu_s']:8.1f} {row['peak_rss_gib']:12.2f} {row.get('objects', ''):>8}")
    sizes = sorted({r["voxels"] for r in rows})
    ratios = {}
    for size in [] if args.instances_only else sizes:  # a ratio needs both kinds
        medians = {kind: {key: statistics.median(r[key] for r in rows if r["voxels"] == size and r["kind"] == kind)
                          for key in ("wall_s", "cpu_s")} for kind in COST_KINDS}
        ratios[str(size)] = {key: medians["instances"][key] / medians["semantic"][key] for key in ("wall_s", "cpu_s")}
        print(f"instances / semantic at {size / 1e9:.3f} Gvoxel, medians of {args.repeats}: wall time "
              f"{ratios[str(size)]['wall_s']:.2f}, CPU time {ratios[str(size)]['cpu_s']:.2f} (target <= 1.3)")
    peaks = [max(r["peak_rss_gib"] for r in rows if r["voxels"] == size and r["kind"] == "instances")
             for size in sizes]
    print(f"peak RSS of instance runs, largest / smallest volume: {peaks[-1] / peaks[0]:.2f} "
          f"(memory does not grow with the volume: ~1)")
    args.record.write_text(json.dumps({"machine": workspace.machine(), "revision": workspace.git_revision(),
                                       "block": args.block, "step_size": args.step_size, "tta": False,
                                       "repeats": args.repeats, "rows": rows, "ratio_instances_over_semantic": ratios,
                                       "peak_rss_ratio_instances": peaks[-1] / peaks[0]}, indent=1))
    print(f"-> {args.record}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = parser.add_subparsers(dest="part", required=True)
    quality_part = parts.add_parser("quality", help="connected components against the instance pipeline, per dataset")
    quality_part.add_argument("--iterations", type=int, default=1000,
                              help="training iterations per run, a multiple of 250 (default: 1000)")
    quality_part.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds (default: 0)")
    quality_part.add_argument("--datasets", nargs="+",
                              choices=["synth4", "synth8", "gerhard", "cdeep3m", "gerhard_p8", "cdeep3m_p8"],
                              default=["synth8", "gerhard"],
                              help="the *_p8 datasets (patch of 8 sections) hold validation sections out of training "
                                   "and add the cell of decoding calibrated on them")
    quality_part.add_argument("--skip_connected_components", action="store_true",
                              help="no semantic model: only the instance pipeline's cells")
    quality_part.add_argument("--methods", nargs="+", choices=["auto", "nnunet"], default=["auto", "nnunet"])
    quality_part.add_argument("--step_size", type=float, default=0.5, help="sliding-window step (default: 0.5)")
    quality_part.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if available")
    quality_part.add_argument("--work", type=Path, default=Path("/tmp/reisoseg_quality"),
                              help="quality.py's work folder: tasks, models and predictions (default: %(default)s)")
    quality_part.add_argument("--report_only", action="store_true",
                              help="only rewrite the summary and tables from the committed records")
    cost = parts.add_parser("cost", help="wall time and peak memory of blockwise objects against semantic")
    cost.add_argument("--model", type=Path, default=demo_model_folder(),
                      help="a model folder trained on an instance target (default: the demo's)")
    bench_blockwise.add_volume_options(cost, sizes=[0.005, 0.02], block_xy=256,
                                       work=Path("/tmp/reisoseg_bench_instances"), kinds=COST_KINDS)
    cost.add_argument("--repeats", type=int, default=3, help="runs of each kind, interleaved; medians (default: 3)")
    cost.add_argument("--instances_only", action="store_true",
                      help="skip the semantic runs: peak memory against volume size, with no ratio")
    cost.add_argument("--record", type=Path, default=Path(__file__).parent / "results" / "instances.json",
                      help="where the record goes (default: %(default)s)")
    args = parser.parse_args()
    if args.part == "quality":
        if args.iterations % 250:
            parser.error("--iterations must be a multiple of 250")
        quality_benchmark(args)
    elif args.measure:
        print(json.dumps(_measure(args)))
    else:
        cost_benchmark(args)

if __name__ == "__main__":
    main()
