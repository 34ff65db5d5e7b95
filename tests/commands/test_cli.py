import json
import subprocess
import sys

import pytest

from reisoseg.commands.main import build_parser
from reisoseg.errors import ReIsoSegError
from tests.conftest import assert_one_line_error, nnunet_environment, run_reisoseg


@pytest.mark.parametrize("command", ["train", "predict", "segment", "measure", "synth", "demo", "convert", "check",
                                     "evaluate", "calibrate-instances", "export-bioimageio"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: reisoseg" in capsys.readouterr().out


def test_commands_start_without_importing_nnunet():
    """Importing nnU-Net prints its banner: only the commands that run it may import it, and only once they do."""
    script = ("import sys; from reisoseg.commands.main import build_parser; build_parser(); "
              "print(sorted(name for name in sys.modules if name.split('.')[0] == 'nnunet'))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_reference_positional_form_parses():
    args = build_parser().parse_args(["train", "3d_fullres", "ReIsoSegRMA4V6Trainer", "Task501_X", "0", "--npz"])
    assert (args.configuration, args.trainer, args.task, args.fold, args.npz) == (
        "3d_fullres", "ReIsoSegRMA4V6Trainer", "Task501_X", "0", True)


def test_synth_refuses_existing_task_without_touching_it(tmp_path):
    env = nnunet_environment(tmp_path)
    args = ["synth", "--task", "504", "--num_training", "1", "--num_test", "0", "--shape", "8", "16", "16"]
    assert run_reisoseg(args, env).returncode == 0
    dataset = tmp_path / "raw" / "nnUNet_raw_data" / "Task504_SynthEM" / "dataset.json"
    before = dataset.read_text()
    assert_one_line_error(run_reisoseg(args, env), "already exists")
    assert dataset.read_text() == before and json.loads(before)["numTraining"] == 1


def test_quick_demo_writes_summary_and_figures_then_reuses_steps(tmp_path):
    import os

    import numpy as np

    from reisoseg.evaluation.metrics import overlap_metrics
    from reisoseg.io.nifti import read_nifti

    out = tmp_path / "demo"
    env = nnunet_environment(tmp_path / "unused")
    previous = os.umask(0o022)
    try:
        first = run_reisoseg(["demo", "--quick", "--output", str(out), "--device", "cpu"], env)
    finally:
        os.umask(previous)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert len(first.stdout.splitlines()) < 60 and "nnUNet" not in first.stdout, first.stdout  # steps only
    # standard error is a pipe here, as a cluster job's log file: one line per step, no redrawn bars
    assert len(first.stdout.splitlines()) + len(first.stderr.splitlines()) < 60, first.stderr
    assert "\r" not in first.stderr and "\x1b[A" not in first.stderr and "training: 1/" in first.stderr
    assert "Please cite the following paper when using nnUNet" in (out / "engine.log").read_text()
    summary = json.loads((out / "summary.json").read_text())
    metrics = {"dice", "iou", "precision", "recall", "hd95_nm", "f1_50", "ap_50", "ap_75", "voi_split", "voi_merge",
               "ari", "predicted_instances", "reference_instances"}
    assert set(summary["metrics"]["mean"]["mitochondria"]) >= metrics
    assert summary["ani_scale"] == [2, 2, 2]
    history = json.loads(next((out / "nnunet" / "results").rglob("branch_losses.json")).read_text())
    assert summary["epochs_trained"] == len(history) >= 1  # what the time budget reached on this machine
    assert summary["iterations_trained"] == 2 * len(history)  # the quick demo's 2 iterations per epoch
    assert f"after {len(history)} epochs of 2 iterations in 0.05 min: mitochondria Dice" in first.stdout
    # float32 by default, also on a CPU with bfloat16 instructions
    training_log = next((out / "nnunet" / "results").rglob("training_log_*.txt")).read_text()
    assert summary["settings"]["cpu_bf16"] is False and "bfloat16" not in training_log + first.stdout
    raw = out / "nnunet" / "raw" / "nnUNet_raw_data" / "Task500_SynthDemo"
    for case, values in summary["metrics"]["per_case"].items():  # the summary is what the files hold
        truth, _ = read_nifti(raw / "labelsTs" / f"{case}.nii.gz")
        predicted, _ = read_nifti(out / "predictions" / f"{case}.nii.gz")
        objects, _ = read_nifti(out / "predictions" / "instances" / f"{case}.nii.gz")
        reference, _ = read_nifti(raw / "instancesTs" / f"{case}.nii.gz")
        assert set(np.unique(predicted)) <= {0, 1}  # boundary voxels folded back into mitochondria
        assert values["mitochondria"]["dice"] == pytest.approx(overlap_metrics(truth == 1, predicted == 1)["dice"])
        assert values["mitochondria"]["predicted_instances"] == np.unique(objects[objects > 0]).size
        assert values["mitochondria"]["reference_instances"] == np.unique(reference[reference > 0]).size >= 1
    for name in ("training_curve.png", "overlay_xy.png", "overlay_xz.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = [out / "summary.json", out / "overlay_xy.png", out / "predictions" / "plans.pkl",
               *(out / "predictions").glob("*.nii.gz"), *(out / "predictions" / "instances").glob("*")]
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {"0o644"}  # umask 022, not mkstemp's 0600
    second = run_reisoseg(["demo", "--quick", "--output", str(out), "--device", "cpu"], env)
    assert second.returncode == 0 and second.stdout.count("(reused)") == 5
    assert summary["decoding_calibration"]["validation_cases"] == ["validation_100"]
    before = (out / "summary.json").read_text()
    assert_one_line_error(run_reisoseg(["demo", "--quick", "--output", str(out), "--seed", "1"], env),
                          "made with other settings (seed 0 -> 1", "--fresh")
    assert (out / "summary.json").read_text() == before


def test_library_errors_name_parameters_and_commands_name_their_flags(tmp_path, capsys):
    from reisoseg.commands.main import main
    from reisoseg.errors import ReIsoSegError
    from reisoseg.io.convert import LabelMapping, convert_to_task, parse_sections

    with pytest.raises(ReIsoSegError, match=r"^1 `images` but 2 `labels`: give one label volume per image$"):
        convert_to_task(["a.tif"], ["b.tif", "c.tif"], task_id=510, name="X", mapping=LabelMapping({"m": (1,)}),
                        raw_data_base=tmp_path)
    with pytest.raises(ReIsoSegError, match=r"^`test_sections` '9-3': last section before first$"):
        parse_sections("9-3")
    common = ["--task", "510", "--name", "X", "--raw_data_base", str(tmp_path)]
    assert main(["convert", "--image", "a.tif", "--labels", "b.tif", "c.tif", "--classes", "m", *common]) == 1
    assert capsys.readouterr().err.strip() == ("reisoseg: error: 1 --image but 2 --labels: give one label volume "
                                               "per image")
    assert main(["convert", "--image", "a.tif", "--labels", "b.tif", "--label-map", "m=1", "--test-sections", "9-3",
                 *common]) == 1
    assert capsys.readouterr().err.strip() == "reisoseg: error: --test-sections '9-3': last section before first"
    assert not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("switch", ["flag", "environment"])
def test_debug_shows_the_traceback_and_the_cause_a_one_line_error_hides(tmp_path, capsys, monkeypatch, switch):
    from reisoseg.commands.main import main

    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\x00" * 64)
    arguments = ["convert", "--image", str(corrupt), "--labels", str(corrupt), "--classes", "m", "--task", "510",
                 "--name", "X", "--raw_data_base", str(tmp_path / "raw")]
    assert main(arguments) == 1
    plain = capsys.readouterr().err
    assert "Traceback" not in plain and plain.startswith("reisoseg: error: ") and "corrupt.h5" in plain
    if switch == "flag":
        arguments.insert(0, "--debug")
    else:
        monkeypatch.setenv("REISOSEG_DEBUG", "1")
    assert main(arguments) == 1
    debug = capsys.readouterr().err
    cause = "The above exception was the direct cause of the following exception:"
    assert debug.count("Traceback") == 2 and cause in debug  # the cause the one line names, then ours
    assert "OSError" in debug.split(cause)[0]  # h5py's own error
    assert debug.strip().splitlines()[-1] == plain.strip()  # the one line still comes last


def test_predict_and_segment_find_the_engine_from_the_results_folders(tmp_path, monkeypatch):
    from reisoseg.commands.options import model_engine

    monkeypatch.setenv("RESULTS_FOLDER", str(tmp_path / "v1"))
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "v2"))
    args = build_parser().parse_args(["predict", "-i", "in", "-o", "out", "-t", "601"])
    assert model_engine(args) == "v1"  # neither holds it: v1, whose own message says what is missing
    (tmp_path / "v2" / "Dataset601_Tiny" / "ReIsoSegTrainer__nnUNetPlans__3d_fullres").mkdir(parents=True)
    assert model_engine(args) == "v2"
    assert model_engine(build_parser().parse_args(["segment", "-i", "in", "-o", "out", "-t", "Tiny"])) == "v2"
    (tmp_path / "v1" / "nnUNet" / "3d_fullres" / "Task601_Tiny" / "ReIsoSegTrainer__nnUNetPlansv2.1").mkdir(
        parents=True)
    with pytest.raises(ReIsoSegError, match="both engines hold a model of ReIsoSegTrainer on task 601"):
        model_engine(args)
    assert model_engine(build_parser().parse_args(["predict", "-i", "in", "-o", "out", "-t", "601",
                                                   "--engine", "v1"])) == "v1"
