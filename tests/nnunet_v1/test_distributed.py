"""Distributed training on CPU with the gloo backend, two processes: the same gradients as one process, identical
weights, one writer, resuming, and a failing rank that stops the job."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from reisoseg.layout import ENGINE_LOG, checkpoint_file, fold_folder, model_folder
from tests.conftest import TASK, run_reisoseg

ROOT = Path(__file__).resolve().parents[2]
PATCH = (4, 32, 32)
STEP = """
import json, sys, torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tests.nnunet_v1.test_distributed import batch, loss_function, network

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
model = network()
distributed = DistributedDataParallel(model)
loss = loss_function(distributed=True)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.99, nesterov=True)
images, targets = batch()
for step in range(3):
    optimizer.zero_grad()
    from reisoseg.network.pi_module import PIChoice
    outputs = distributed(images[rank::world], pi_choice=PIChoice(step % 4, "z"))
    loss(outputs, [t[rank::world] for t in targets]).backward()
    if step == 0:
        torch.save({n: p.grad for n, p in model.named_parameters()}, f"{sys.argv[1]}/grad{rank}.pt")
    optimizer.step()
torch.save(model.state_dict(), f"{sys.argv[1]}/weights{rank}.pt")
dist.destroy_process_group()
"""


def network():
    from reisoseg.network import ReIsoSegRMV6

    torch.manual_seed(0)
    return ReIsoSegRMV6(1, 2, (2, 2, 2)).double()  # float64: float32 alone differs by ~0.5 % between batch sizes


def batch() -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Two images and the six deep-supervision targets (heads 2 and 5 at half the in-plane resolution)."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(2, 1, *PATCH, generator=generator, dtype=torch.float64)
    labels = (torch.rand(2, 1, *PATCH, generator=generator) > 0.7).double()
    half = labels[:, :, :, ::2, ::2]
    return images, [labels, labels, half, labels, labels, half]


def loss_function(distributed: bool = False):
    """Our trainers' loss: ReIsoLoss over nnU-Net's Dice + CE with batch Dice, as in 3d_fullres."""
    from reisoseg.loss import ReIsoLoss
    from reisoseg.nnunet_v1.compat import redirected

    with redirected():
        from nnunet.training.loss_functions.dice_loss import DC_and_CE_loss

    base = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False}, {})
    if distributed:
        from reisoseg.nnunet_v1.distributed import GlobalBatchDice

        base.dc = GlobalBatchDice(base.dc.apply_nonlin, True, False, 1e-5)
    return ReIsoLoss(base)


def test_two_ranks_with_batch_1_give_one_process_with_batch_2_its_gradient_and_stay_identical(tmp_path):
    script = tmp_path / "step.py"
    script.write_text(STEP)
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             str(script), str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    from reisoseg.network.pi_module import PIChoice

    model = network()
    images, targets = batch()
    loss_function()(model(images, pi_choice=PIChoice(0, "z")), targets).backward()
    scale = max(float(parameter.grad.abs().max()) for parameter in model.parameters())
    for rank in (0, 1):
        gradients = torch.load(tmp_path / f"grad{rank}.pt")
        for name, parameter in model.named_parameters():
            assert float((gradients[name] - parameter.grad).abs().max()) < 1e-9 * scale, name
    first, second = (torch.load(tmp_path / f"weights{rank}.pt") for rank in (0, 1))
    assert all(torch.equal(first[name], second[name]) for name in first)  # after three steps
    assert any(not torch.equal(first[name], value) for name, value in network().state_dict().items())  # trained


TWO_CPU_RANKS = ["--gpus", "2", "--device", "cpu", "--iterations_per_epoch", "2", "--disable_validation_inference"]


def test_the_baseline_trains_on_two_ranks_with_one_writer_to_a_time_budget(trained):
    """The baseline has the training layer's DDP and time budget, as ReIsoSeg has."""
    env, root, model = trained
    result = run_reisoseg(["train", "3d_fullres", "nnUNetTrainerV2EM", TASK, "4", "--epochs", "5",
                           "--budget_minutes", "0.001", *TWO_CPU_RANKS], env)
    assert result.returncode == 0, result.stderr[-3000:]
    fold = fold_folder(model_folder(env["RESULTS_FOLDER"], TASK, "nnUNetTrainerV2EM"), 4)
    logs = list(fold.glob("training_log_*.txt"))
    assert len(logs) == 1 and "batch 1: about" in logs[0].read_text()  # the plans' 2 split over two ranks
    assert "time budget 0 s" in logs[0].read_text() and ": 1 epochs" in logs[0].read_text()  # spent: stop, not at 5
    assert checkpoint_file(fold).is_file()


@pytest.mark.slow  # four 2-rank nnU-Net runs, ~3 min on 2 cores
def test_two_rank_training_has_one_writer_resumes_and_stops_when_a_rank_dies(trained):
    env, root, model = trained
    fold = fold_folder(model, 4)
    first = run_reisoseg(["train", "3d_fullres", "ReIsoSegTrainer", TASK, "4", "--epochs", "1", *TWO_CPU_RANKS], env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.splitlines()[-1] == f"done: {fold}"
    assert len(list(fold.glob("training_log_*.txt"))) == 1  # rank 1 wrote no log of its own
    assert checkpoint_file(fold).is_file()
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "batch 1: about" in log  # the plans' batch of 2, split over two ranks
    resumed = run_reisoseg(["train", "3d_fullres", "ReIsoSegTrainer", TASK, "4", "-c", "--epochs", "2",
                            *TWO_CPU_RANKS], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [h["epoch"] for h in json.loads((fold / "branch_losses.json").read_text())] == [0, 1]

    errors = root / "distributed_errors.txt"
    with open(errors, "w") as stderr:  # a file, not a pipe: the killed rank's augmentation workers keep its copy
        process = subprocess.Popen([sys.executable, "-m", "reisoseg.commands.main", "train", "3d_fullres",
                                    "ReIsoSegTrainer", TASK, "4", "--epochs", "50", *TWO_CPU_RANKS], env=env,
                                   stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True)
    victim = None
    try:
        victim = _wait_for_rank(1, fold / ENGINE_LOG, deadline=time.monotonic() + 300)
        os.kill(victim, signal.SIGKILL)
        started = time.monotonic()
        process.wait(timeout=180)
        assert time.monotonic() - started < 180  # not the 30-minute collective timeout
    finally:
        for group in (process.pid, victim):  # the job, and the orphaned workers of the killed rank
            if group is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(group, signal.SIGKILL)
    assert process.returncode == 1 and "distributed training stopped: a rank exited" in errors.read_text()
    after_kill = run_reisoseg(["train", "3d_fullres", "ReIsoSegTrainer", TASK, "4", "-c", "--epochs", "3",
                               *TWO_CPU_RANKS], env)  # the killed run resumes from its last checkpoint (epoch 2)
    assert after_kill.returncode == 0, after_kill.stderr[-3000:]
    assert [h["epoch"] for h in json.loads((fold / "branch_losses.json").read_text())] == [0, 1, 2]


def _wait_for_rank(rank: int, log: Path, deadline: float) -> int:
    """The pid of the training process of `rank` (a child of torchrun, not one of its augmentation workers, which
    inherit its environment), once the run has started its first epoch."""
    while time.monotonic() < deadline:
        if log.is_file() and "epoch:  0" in log.read_text():
            for entry in Path("/proc").iterdir():
                try:
                    environment = (entry / "environ").read_bytes().split(b"\0")
                    parent = (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                    launcher = Path("/proc", parent, "cmdline").read_bytes()
                except (OSError, ValueError, IndexError):
                    continue
                if f"RANK={rank}".encode() in environment and b"torch.distributed.run" in launcher:
                    return int(entry.name)
        time.sleep(0.5)
    pytest.fail(f"rank {rank} never started training")
