"""The quality benchmark's bookkeeping: training time and sessions from nnU-Net's logs, convergence."""
from __future__ import annotations

import pytest

from tests.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def quality():
    return load_benchmark("quality")


def _log(*epochs) -> str:
    lines = []
    for epoch, took in epochs:
        lines += ["2026-11-29 08:00:00.0: ", f"epoch:  {epoch} ", "2026-11-29 08:00:01.0: train loss : 0.5 "]
        if took is not None:
            lines.append(f"2026-11-29 08:00:09.0: This epoch took {took} s")
    return "\n".join(lines) + "\n"


def test_epoch_seconds_count_a_repeated_epoch_once(quality, tmp_path):
    (tmp_path / "training_log_2026_11_29_08_00_00.txt").write_text(_log((0, 10.0), (1, 11.5), (2, None)))
    (tmp_path / "training_log_2026_11_29_09_00_00.txt").write_text(_log((1, 12.0), (2, 13.0)))  # resumed at 1
    assert quality.epoch_seconds(tmp_path) == {0: 10.0, 1: 12.0, 2: 13.0}
    assert quality.training_sessions(tmp_path) == 2
    (tmp_path / "training_log_2026_11_29_10_00_00.txt").write_text("Starting... \nloading checkpoint \n")  # scoring
    assert quality.training_sessions(tmp_path) == 2


def _v2_log(*epochs) -> str:
    lines = []
    for epoch, took in epochs:
        lines += ["2026-12-07 08:00:00.000001: ", f"2026-12-07 08:00:00.000002: Epoch {epoch}",
                  "2026-12-07 08:00:00.000003: Current learning rate: 0.00999"]
        if took is not None:
            lines += ["2026-12-07 08:00:09.0: train_loss -0.12", f"2026-12-07 08:00:09.0: Epoch time: {took} s"]
    return "\n".join(lines) + "\n"


def test_v2_epoch_seconds_come_from_v2s_log_lines(quality, tmp_path):
    v2 = quality.ENGINES["v2"]
    (tmp_path / "training_log_2026_12_7_08_00_00.txt").write_text(_v2_log((0, 10.25), (1, None)))
    (tmp_path / "training_log_2026_12_7_09_00_00.txt").write_text(_v2_log((1, 12.5), (2, 13.0)))  # resumed at 1
    assert quality.epoch_seconds(tmp_path, v2) == {0: 10.25, 1: 12.5, 2: 13.0}
    assert quality.training_sessions(tmp_path, v2) == 2
    assert quality.epoch_seconds(tmp_path) == {}  # v1's lines are not v2's


def test_convergence_compares_the_last_two_tenths(quality):
    assert quality.convergence([0.5] * 18 + [0.8, 0.81])["converged"] is False  # 0.8 vs 0.5 windows of 2
    assert quality.convergence([0.80, 0.81] * 10)["converged"] is True


def test_convergence_is_written_with_its_change(quality):
    assert quality.convergence_text({"convergence": {"converged": False, "change": -0.0239}}) == \
        "not converged (-0.024)"
    assert quality.convergence_text({"convergence": {"converged": False, "reason": "too few epochs"}}) == \
        "not converged (too few epochs)"


def test_semantic_runs_score_every_snapshot_and_instance_runs_only_the_final_model(quality):
    semantic = quality.DATASETS["synth8"]
    assert semantic.scored_iterations(1000) == [250, 500, 750, 1000]
    assert semantic.with_instance_target().scored_iterations(1000) == [1000]


def test_only_the_synthetic_datasets_know_their_object_ids(quality):
    assert [key for key, dataset in quality.DATASETS.items() if dataset.synthetic] == ["synth1", "synth4", "synth8"]
    assert quality.DATASETS["synth4"].with_instance_target().synthetic


def _run(iterations_and_seconds, method):
    return {"method": method, "iterations": iterations_and_seconds[-1][0],
            "snapshots": [{"iterations": i, "train_s": t} for i, t in iterations_and_seconds]}


def test_equal_wall_time_pairs_the_runs_at_their_idle_pace(quality):
    # ReIsoSeg: 100 s per 250 iterations, its first stretch slowed 3x by other work (recorded 500 s in all);
    # nnU-Net: 60 s per 250 iterations (240 s). At idle pace ReIsoSeg's 500 snapshot (200 s) fits, 750 (300 s) not
    ours = _run([(250, 300.0), (500, 400.0), (750, 500.0), (1000, 600.0)], "auto")
    theirs = _run([(250, 60.0), (500, 120.0), (750, 180.0), (1000, 240.0)], "nnunet")
    assert quality.idle_seconds_per_iteration(ours) == pytest.approx(0.4)
    mine, other = quality.equal_time_snapshots(ours, theirs)
    assert (mine["iterations"], other["iterations"]) == (500, 1000)
    assert [s["iterations"] for s in quality.equal_time_snapshots(theirs, ours)] == [1000, 500]
    slower_baseline = _run([(250, 200.0), (500, 400.0), (750, 600.0), (1000, 800.0)], "nnunet")
    assert [s["iterations"] for s in quality.equal_time_snapshots(ours, slower_baseline)] == [1000, 500]


V2_REHEARSAL = """
import sys
from argparse import Namespace
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, "benchmarks")
import quality

work = Path(sys.argv[1])
engine = quality.ENGINES["v2"]
engine.use_folders(work)  # before anything imports nnunetv2
engine.runs = work / "records"
quality.SYNTH_SHAPES[8], quality.SYNTH_TRAINING, quality.SYNTH_TEST = (12, 96, 96), 2, 1  # objects in each
quality.ITERATIONS_PER_EPOCH, quality.VAL_ITERATIONS_PER_EPOCH, quality.SNAPSHOT_ITERATIONS = 2, 1, 2
dataset = replace(quality.DATASETS["synth8"], patch=(8, 32, 32))
task = dataset.prepare(engine)
args = Namespace(step_size=0.5, device="cpu", work=work)
for method in ("auto", "nnunet"):
    quality.run(dataset, task, method, quality.trainer_for(method, task, engine), 0, 4, args, engine)
"""


@pytest.mark.slow  # v2's planning and two tiny trainings: about two minutes
def test_the_v2_comparison_trains_snapshots_and_scores_both_networks(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from tests.benchmarks import BENCHMARKS

    pytest.importorskip("nnunetv2", reason="the nnunetv2 extra is not installed")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "nnUNet_n_proc_DA": "1"}
    done = subprocess.run([sys.executable, "-c", V2_REHEARSAL, str(tmp_path)], cwd=BENCHMARKS.parent, env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    records = {path.name: json.loads(path.read_text()) for path in (tmp_path / "records").glob("*.json")}
    assert sorted(records) == ["synth8_auto_seed0_it4_step0.5.json", "synth8_nnunet_seed0_it4_step0.5.json"]
    for record in records.values():
        assert record["engine"] == "v2" and record["trainer"] in ("ReIsoSegTrainer", "nnUNetTrainerEM")
        assert [s["iterations"] for s in record["snapshots"]] == [2, 4]  # a kept snapshot and the final model
        assert len(record["validation_pseudo_dice"]) == 2 and record["train_s"] > 0
        assert 0 <= record["metrics"]["dice"] <= 1 and set(record["per_case"]) == {"synth_002"}


def test_results_elsewhere_move_records_tables_and_figure_of_that_engine_only(tmp_path):
    engines = load_benchmark("quality_engines")
    engine = engines.V1()
    engine.use_results(tmp_path)
    assert (engine.runs, engine.report, engine.summary, engine.figure) == (
        tmp_path / "quality_runs", tmp_path / "quality.md", tmp_path / "quality.json",
        tmp_path / "quality_dice_vs_iterations.png")
    assert engines.ENGINES["v1"].runs == engines.V1.runs != engine.runs  # the shared engines keep theirs
