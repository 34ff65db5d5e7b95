"""benchmarks/gpu_check.py: its checks run with device=cpu (as far as a CPU allows), and without a GPU it says so."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TASK

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_step_and_ux_unit_checks_pass_on_cpu(gpu_check):
    step = gpu_check.training_step(CPU, (8, 32, 32), 2)
    before, after = step["loss"]
    assert step["ok"] and not step["skipped"] and after < before  # the step learned the batch it was given
    assert f"loss {before:.4f} -> {after:.4f}" in step["detail"] and "estimate" in step["detail"]
    unit = gpu_check.ux_unit(CPU)
    assert unit["ok"], unit["detail"]


@pytest.mark.slow  # two nnU-Net trainings and a prediction, ~1.5 min on 2 cores
def test_resume_predict_and_segment_checks_pass_on_cpu(gpu_check, trained, tmp_path):
    env, _, model = trained
    resumed = gpu_check.resume_and_predict(env, TASK, CPU, fold="2")  # its own fold: the others are in use
    assert resumed["ok"] and "epochs 1 -> 2" in resumed["detail"], resumed["detail"]
    segmented = gpu_check.segment_on(model, CPU, tmp_path, shape=(16, 64, 64), fold="2")
    assert segmented["ok"], segmented["detail"]


def test_a_failing_check_is_reported_not_raised(gpu_check, capsys):
    rows = gpu_check.run_checks({"good": lambda: {"ok": True, "detail": "fine"}, "bad": lambda: 1 / 0})
    assert [(name, ok) for name, ok, _, _ in rows] == [("good", True), ("bad", False)]
    gpu_check.print_table(rows)
    assert "FAIL" in capsys.readouterr().out and "ZeroDivisionError" in rows[1][2]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_without_a_gpu_it_says_so_and_exits_0():
    result = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "no CUDA GPU found" in result.stdout
