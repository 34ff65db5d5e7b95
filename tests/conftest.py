"""Shared helpers: run our commands in a subprocess (nnU-Net reads its folders at import time)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from reisoseg.layout import model_folder

BIN = Path(sys.executable).parent
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
NNUNET_VARIABLES = ("nnUNet_raw_data_base", "nnUNet_preprocessed", "RESULTS_FOLDER")


def nnunet_environment(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in NNUNET_VARIABLES}
    folders = {"nnUNet_raw_data_base": root / "raw", "nnUNet_preprocessed": root / "preprocessed",
               "RESULTS_FOLDER": root / "results"}
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    env.update({k: str(v) for k, v in folders.items()})
    env.setdefault("OMP_NUM_THREADS", "2")  # 1 beside a background benchmark: oversubscribed cores run ~6x slower
    env.update({"nnUNet_n_proc_DA": "1", "PYTHONUNBUFFERED": "1"})
    return env


def run_command(command: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    """`subprocess.run` in a session of its own: on a timeout the whole process group is killed, so nnU-Net's
    augmentation and preprocessing workers do not outlive the test and slow the rest of the suite."""
    with subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def run_reisoseg(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return run_command([sys.executable, "-m", "reisoseg.commands.main", *args], env, timeout)


def kill_after_first_marker(command: list[str], env: dict[str, str], markers: Path, total: int) -> int:
    """Start `reisoseg COMMAND`, SIGKILL it once a finished-block marker (not its temporary file) exists in
    `markers`; returns how many blocks were marked, asserted to be between 1 and total - 1."""
    import time

    process = subprocess.Popen([sys.executable, "-m", "reisoseg.commands.main", *command], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def marked() -> int:
        return len([p for p in markers.iterdir() if not p.name.startswith(".")]) if markers.is_dir() else 0

    deadline = time.monotonic() + 300
    while not marked() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = marked()
    assert 1 <= done < total, done
    return done


def plan_and_preprocess(task_id: int, env: dict[str, str], verify_only: bool = False) -> subprocess.CompletedProcess:
    """nnU-Net v1's own planning with --verify_dataset_integrity (only the check and cropping if verify_only)."""
    extra = ["-no_pp", "-pl3d", "None", "-pl2d", "None"] if verify_only else []
    result = run_command([str(BIN / "nnUNet_plan_and_preprocess"), "-t", str(task_id), "--verify_dataset_integrity",
                          "-tl", "1", "-tf", "1", *extra], env, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Non-zero exit, no traceback, one `reisoseg: error:` line containing every fragment."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("reisoseg: error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real EM data not found at {SHARED_DATA} (CI provides ../shared/data)")
    return SHARED_DATA


TASK = "Task501_Tiny"
TRAIN = ["--epochs", "2", "--iterations-per-epoch", "3", "--device", "cpu"]


@pytest.fixture(scope="session")
def trained(tmp_path_factory):
    """A ReIsoSegTrainer model (folds 0 and 1, a few iterations) on a tiny synthetic task: (env, root, model)."""
    root = tmp_path_factory.mktemp("e2e")
    env = nnunet_environment(root)
    made = run_reisoseg(["synth", "--task", "501", "--name", "Tiny", "--num_training", "5", "--num_test", "1",
                         "--shape", "12", "48", "48", "--seed", "3"], env)
    assert made.returncode == 0, made.stderr
    plan_and_preprocess(501, env)
    for fold in ("0", "1"):
        result = run_reisoseg(["train", "3d_fullres", "ReIsoSegTrainer", TASK, fold, *TRAIN], env)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    model = model_folder(env["RESULTS_FOLDER"], TASK)
    return env, root, model


@pytest.fixture(scope="session")
def trained_instances(tmp_path_factory):
    """A ReIsoSegTrainer model on a tiny task with the instance target (fold 0, a few iterations): (env, model).

    Barely trained, so its stored decoding settings are loosened (any seed, no minimum volume) to make sure the
    comparisons below are between volumes that hold objects."""
    import json

    root = tmp_path_factory.mktemp("e2e_instances")
    env = nnunet_environment(root)
    made = run_reisoseg(["synth", "--task", "503", "--name", "TinyObjects", "--num_training", "5", "--num_test", "1",
                         "--shape", "12", "48", "48", "--seed", "5", "--instances"], env)
    assert made.returncode == 0, made.stderr
    plan_and_preprocess(503, env)
    result = run_reisoseg(["train", "3d_fullres", "ReIsoSegTrainer", "503", "0", *TRAIN], env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    model = model_folder(env["RESULTS_FOLDER"], "Task503_TinyObjects")
    stored = json.loads((model / "instances.json").read_text())
    assert stored["boundary_class"] == 2 and stored["min_volume_nm3"] > 0
    (model / "instances.json").write_text(json.dumps({**stored, "min_volume_nm3": 0.0, "seed_threshold": 0.4}))
    return env, model


class TouchesMarker:
    """A pickle payload that runs code when unpickled: it creates `marker`. Model files holding it must be
    refused, and the marker must never appear."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
