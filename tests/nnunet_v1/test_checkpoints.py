"""Checkpoints that survive: atomic writes, the state a checkpoint round-trips, and real training runs killed with
SIGKILL (between epochs, and in the middle of a checkpoint write) or stopped with SIGTERM, then continued with -c."""
from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from reisoseg.checkpointing import restore_rng_state, rng_state
from reisoseg.errors import ReIsoSegError
from reisoseg.layout import ENGINE_LOG, FINAL_CHECKPOINT, LATEST_CHECKPOINT, checkpoint_file, fold_folder
from reisoseg.nnunet_v1.checkpoints import write_checkpoint
from reisoseg.safe_loading import safe_load_checkpoint
from tests.conftest import TASK, run_reisoseg
from tests.nnunet_v1.test_trainers import _trainer

ROOT = Path(__file__).resolve().parents[2]


def test_a_write_that_fails_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "model_latest.model"
    write_checkpoint(path, {"epoch": 3}, {"name": "first"})
    real_save = torch.save

    def failing_save(state, target):
        Path(target).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError):
        write_checkpoint(path, {"epoch": 4}, {"name": "second"})
    monkeypatch.setattr(torch, "save", real_save)
    assert safe_load_checkpoint(path)["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model_latest.model", "model_latest.model.pkl"]


def test_checkpoint_files_honour_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        write_checkpoint(tmp_path / "m.model", {"epoch": 1}, {})
    finally:
        os.umask(previous)
    assert {oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()} == {oct(0o640)}


def test_rng_state_round_trips_through_a_checkpoint(tmp_path):
    write_checkpoint(tmp_path / "m.model", {"rng": rng_state(torch.device("cpu"))}, {})
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng_state(safe_load_checkpoint(tmp_path / "m.model")["rng"])
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1]) and expected[2] == again[2]


def _ready(folder, **settings):
    """A ReIsoSegTrainer on hand-made plans with its network and optimizer, as after initialize (no data);
    `settings` are trainer attributes set first."""
    trainer = _trainer(folder)
    for name, value in settings.items():
        setattr(trainer, name, value)
    trainer.device = torch.device("cpu")
    trainer.initialize_network()
    trainer.initialize_optimizer_and_scheduler()
    trainer.was_initialized = True
    return trainer


def test_latest_is_saved_at_an_epochs_end_once_the_interval_has_passed(tmp_path):
    trainer = _ready(tmp_path)
    trainer.output_folder = str(tmp_path)
    trainer.checkpoint_minutes, trainer.epoch = 5.0, 3
    latest = checkpoint_file(tmp_path, LATEST_CHECKPOINT)
    trainer._last_save = time.time() - 290  # 4 min 50 s ago: not yet
    trainer.maybe_save_checkpoint()
    assert not latest.exists()
    trainer._last_save = time.time() - 310
    trainer.maybe_save_checkpoint()
    assert safe_load_checkpoint(latest)["epoch"] == 4
    trainer.checkpoint_minutes, trainer.save_latest_only, trainer.save_every = 0.0, False, 2
    trainer.maybe_save_checkpoint()  # every epoch, plus nnU-Net's numbered snapshot every save_every epochs
    assert (tmp_path / "model_ep_004.model").is_file() and (tmp_path / "model_ep_004.model.pkl").is_file()


def test_a_trainer_checkpoint_restores_weights_optimizer_curves_and_history(tmp_path):
    saved = _ready(tmp_path / "a")
    saved.network(torch.rand(1, 1, 16, 64, 64))[3].mean().backward()
    saved.optimizer.step()
    saved.epoch = 2  # mid-epoch 2: two epochs done, the third's training loss already logged
    saved.all_tr_losses, saved.all_val_losses, saved.all_val_eval_metrics = [0.9, 0.8, 0.7], [1.0, 0.9], [0.1, 0.2]
    saved.branch_loss_history = [{"epoch": e, "train_iso": 1.0 - e} for e in range(3)]
    path = tmp_path / "model_latest.model"
    saved._save(path, completed_epochs=2)
    draws = torch.rand(2)

    loaded = _ready(tmp_path / "b")
    loaded.load_checkpoint_ram(safe_load_checkpoint(path), train=True)
    assert loaded.epoch == 2 and loaded.all_tr_losses == [0.9, 0.8] and loaded.all_val_eval_metrics == [0.1, 0.2]
    assert [h["epoch"] for h in loaded.branch_loss_history] == [0, 1]
    for key, value in saved.network.state_dict().items():
        assert torch.equal(value, loaded.network.state_dict()[key]), key
    momentum = [s["momentum_buffer"] for s in loaded.optimizer.state_dict()["state"].values()]
    assert momentum and all(torch.equal(a["momentum_buffer"], b) for a, b in
                            zip(saved.optimizer.state_dict()["state"].values(), momentum))
    assert torch.equal(torch.rand(2), draws)  # the random stream goes on where the checkpoint was taken


def test_adamw_starts_at_its_learning_rate_and_a_run_continues_only_with_the_same_optimizer(tmp_path):
    saved = _ready(tmp_path / "a", optimizer_name="adamw", initial_lr=3e-3)
    assert isinstance(saved.optimizer, torch.optim.AdamW)
    assert saved.optimizer.param_groups[0]["lr"] == 3e-3
    assert saved.optimizer.param_groups[0]["weight_decay"] == saved.weight_decay
    saved.maybe_update_lr(epoch=50)  # nnU-Net's poly schedule, from this start
    assert saved.optimizer.param_groups[0]["lr"] == pytest.approx(3e-3 * (1 - 50 / saved.max_num_epochs) ** 0.9)
    saved.network(torch.rand(1, 1, 16, 64, 64))[3].mean().backward()
    saved.optimizer.step()
    path = tmp_path / "model_latest.model"
    saved._save(path, completed_epochs=1)

    loaded = _ready(tmp_path / "b", optimizer_name="adamw", initial_lr=3e-3)
    loaded.load_checkpoint_ram(safe_load_checkpoint(path), train=True)
    pairs = list(zip(saved.optimizer.state_dict()["state"].values(), loaded.optimizer.state_dict()["state"].values()))
    assert pairs and all(torch.equal(a["exp_avg_sq"], b["exp_avg_sq"]) for a, b in pairs)
    # SGD would read Adam's state
    with pytest.raises(ReIsoSegError, match="trained with the adamw optimizer"):
        _ready(tmp_path / "c").load_checkpoint_ram(safe_load_checkpoint(path), train=True)
    predicting = _ready(tmp_path / "d")
    predicting.load_checkpoint_ram(safe_load_checkpoint(path), train=False)  # prediction needs the weights only
    assert torch.equal(predicting.network.state_dict()["net.conv0.conv.weight"],
                       saved.network.state_dict()["net.conv0.conv.weight"])


@pytest.mark.parametrize("options, error", [({"optimizer": "adam"}, "unknown `optimizer`"),
                                            ({"initial_lr": 0.0}, "must be positive"),
                                            ({"optimizer": "adamw", "trainer": "nnUNetTrainerV2"}, "nnU-Net's SGD")])
def test_optimizer_options_are_checked(tmp_path, options, error):
    from nnunet.training.network_training.nnUNetTrainerV2 import nnUNetTrainerV2

    from reisoseg.nnunet_v1.training import _configure
    from reisoseg.nnunet_v1.training_options import TrainingOptions

    trainer = nnUNetTrainerV2(str(tmp_path / "plans.pkl"), 0, output_folder=str(tmp_path),
                              dataset_directory=str(tmp_path), stage=0, unpack_data=False) \
        if options.pop("trainer", None) else _trainer(tmp_path)
    with pytest.raises(ReIsoSegError, match=error):
        _configure(trainer, TrainingOptions(**options), torch.device("cpu"))
    _configure(trainer := _trainer(tmp_path), TrainingOptions(optimizer="adamw", initial_lr=3e-3),
               torch.device("cpu"))
    assert (trainer.optimizer_name, trainer.initial_lr) == ("adamw", 3e-3)


# Real runs: fold 'all' of the tiny task (no other test trains it), two iterations an epoch, model_latest at every
# epoch's end.
RUN = ["train", "3d_fullres", "ReIsoSegTrainer", TASK, "all", "--epochs", "8", "--iterations_per_epoch", "2",
       "--device", "cpu", "--checkpoint_minutes", "0", "--disable_validation_inference"]
BLOCK_SECOND_LATEST_SAVE = """
import sys, time
from pathlib import Path
import torch

real_save, saves = torch.save, []

def save(state, target, *args, **kwargs):
    if "model_latest" in Path(target).name:
        saves.append(target)
        if len(saves) == 2:  # the second save of this run: half written, then wait for the SIGKILL
            Path(target).write_bytes(b"half a checkpoint")
            Path(sys.argv[1]).touch()
            time.sleep(600)
    return real_save(state, target, *args, **kwargs)

torch.save = save
from reisoseg.commands.main import main
sys.exit(main(sys.argv[2:]))
"""


def _start(command: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own group: the augmentation workers go with it


def _wait_until(condition, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 300
    while not condition():
        if process.poll() is not None or time.monotonic() > deadline:
            _kill(process)
            pytest.fail(f"never saw {what}: {process.stderr.read()[-3000:]}")
        time.sleep(0.05)


def _kill(process: subprocess.Popen, how: int = signal.SIGKILL) -> None:
    """SIGKILL the run's whole process group; SIGTERM only the trainer, as a scheduler asking it to stop."""
    with contextlib.suppress(ProcessLookupError):
        if how == signal.SIGTERM:
            process.send_signal(how)
        else:
            os.killpg(process.pid, how)


def _log(fold: Path) -> str:
    return "".join(p.read_text() for p in sorted(fold.glob("training_log_*.txt")))


def test_killed_and_preempted_training_continues_where_it_stopped(trained):
    env, root, model = trained
    fold = fold_folder(model, "all")
    latest = checkpoint_file(fold, LATEST_CHECKPOINT)

    # SIGKILL during the 4th epoch: the checkpoint of the end of epoch 3 remains
    killed = _start([sys.executable, "-m", "reisoseg.commands.main", *RUN], env)
    _wait_until(lambda: "epoch:  3" in _log(fold), killed, "epoch 3 start")
    _kill(killed)
    killed.wait()
    assert safe_load_checkpoint(latest)["epoch"] == 3

    # -c resumes at epoch 3; SIGKILL in the middle of its second checkpoint write (end of epoch 4)
    marker = root / "writing"
    resumed = _start([sys.executable, "-c", BLOCK_SECOND_LATEST_SAVE, str(marker), *RUN, "-c"], env)
    _wait_until(marker.is_file, resumed, "the blocked checkpoint write")
    _kill(resumed)
    resumed.wait()
    log = _log(fold)
    assert log.split("loading checkpoint")[-1].split("epoch: ")[1].split()[0] == "3"  # resumed at epoch 3
    assert safe_load_checkpoint(latest)["epoch"] == 4  # the write in progress never replaced the previous checkpoint
    assert [p.name for p in fold.glob(".model_latest*")]  # its temporary file, left behind by the kill

    # -c again, then SIGTERM during epoch 5: saved and stopped, exit 143, the unfinished write cleaned away
    preempted = _start([sys.executable, "-m", "reisoseg.commands.main", *RUN, "-c"], env)
    _wait_until(lambda: _log(fold).count("epoch:  5") == 1, preempted, "epoch 5 start")
    _kill(preempted, signal.SIGTERM)
    assert preempted.wait(timeout=120) == 143
    stderr = preempted.stderr.read()
    assert "Traceback" not in stderr and "reisoseg: stopped: SIGTERM during epoch 5" in stderr, stderr
    assert safe_load_checkpoint(latest)["epoch"] == 5 and not checkpoint_file(fold, FINAL_CHECKPOINT).exists()
    assert not list(fold.glob(".model_latest*")) and "left by an interrupted checkpoint write" in _log(fold)

    finished = run_reisoseg([*RUN[:5], "--epochs", "6", *RUN[7:], "-c"], env)
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.splitlines() == [f"done: {fold}"]  # nnU-Net's messages went to the fold's engine.log
    assert "epoch:" not in finished.stdout + finished.stderr and "epoch:  5" in (fold / ENGINE_LOG).read_text()
    assert checkpoint_file(fold, FINAL_CHECKPOINT).is_file() and not latest.exists()
    assert [h["epoch"] for h in json.loads((fold / "branch_losses.json").read_text())] == list(range(6))
