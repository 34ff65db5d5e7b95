"""Training on several processes with torch.distributed: DistributedDataParallel, gloo on CPU, nccl on CUDA.

Started by `torchrun --nproc_per_node N -m reisoseg.commands.train ...` (or `reisoseg train ... --gpus N`, which
runs that), each process is one rank. What changes against one process (`ReIsoSegTrainer` and `run_training` use
the pieces below):
- the global batch of the plans is split over the ranks (`split_batch`), as nnU-Net v1's DDP trainer did;
- DistributedDataParallel wraps the whole network, the PI module included, for the training forward pass, so
  gradients are averaged over ranks;
- nnU-Net's batch Dice covers the global batch: each rank's true/false positives and negatives are summed over the
  ranks with a differentiable all-reduce (`GlobalBatchDice`), so N ranks with batch b/N give the gradient of one
  process with batch b; so does the online pseudo-Dice (`all_reduce_sum`);
- data sampling is seeded per rank (numpy, Python), so ranks never draw the same patches, while torch's RNG is
  seeded alike on every rank: the PI module then draws the same transform on every rank at every step, which is
  what the method specifies (one random transform per forward pass, shared by the whole batch);
- ranks initialise one after the other (rank 0 first: it unpacks the data and writes the splits), only rank 0
  writes logs, checkpoints and figures and runs the final validation, and epoch counts refitted to a time budget
  come from rank 0.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from nnunet.training.loss_functions.dice_loss import SoftDiceLoss, get_tp_fp_fn_tn

from reisoseg.errors import ReIsoSegError

TIMEOUT = timedelta(minutes=30)  # a rank waiting longer than this for the others gives up


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks, from torchrun's environment variables."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def ranks_from_environment() -> Ranks | None:
    """The ranks torchrun describes (WORLD_SIZE, RANK, LOCAL_RANK), or None for a single process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    return Ranks(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def start(ranks: Ranks, device_type: str) -> torch.device:
    """Join the process group (nccl for CUDA, gloo otherwise) and return this rank's device."""
    if device_type == "cuda":
        if torch.cuda.device_count() <= ranks.local_rank:
            raise ReIsoSegError(f"rank {ranks.rank} needs GPU {ranks.local_rank}, but only "
                                f"{torch.cuda.device_count()} are visible")
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device(device_type)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=TIMEOUT)
    return device


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    dist.barrier()


def split_batch(global_batch: int, ranks: Ranks) -> int:
    """This rank's share of the global batch (the first ranks take one more when it does not divide)."""
    if global_batch < ranks.world:
        raise ReIsoSegError(f"batch size {global_batch} cannot be split over {ranks.world} processes; give "
                            f"`batch_size` >= {ranks.world}")
    return global_batch // ranks.world + (ranks.rank < global_batch % ranks.world)


def _for_backend(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` where the process group's backend can send it: nccl only sends CUDA tensors."""
    return tensor.cuda() if dist.get_backend() == "nccl" else tensor


def shared_seed(seed: int | None) -> int:
    """`seed`, or rank 0's random draw, on every rank."""
    return broadcast_int(seed if seed is not None else int(np.random.SeedSequence().entropy % 2**31))


def broadcast_int(value: int) -> int:
    """Rank 0's `value` on every rank."""
    tensor = _for_backend(torch.tensor([int(value)]))
    dist.broadcast(tensor, 0)
    return int(tensor.cpu())


def all_reduce_sum(values: np.ndarray) -> np.ndarray:
    """Element-wise sum over the ranks (no gradient)."""
    tensor = _for_backend(torch.as_tensor(np.asarray(values, dtype=np.float64)))
    dist.all_reduce(tensor)
    return tensor.cpu().numpy()


class GlobalBatchDice(SoftDiceLoss):
    """nnU-Net's soft Dice with batch Dice over the global batch: the per-class sums of every rank are added with a
    differentiable all-reduce before the ratio is taken. Its backward sums the ranks' gradients of the shared
    ratio, and DDP then divides by the number of ranks: the gradient equals one process's on the whole batch."""

    def forward(self, x: torch.Tensor, y: torch.Tensor, loss_mask: torch.Tensor | None = None) -> torch.Tensor:
        from torch.distributed.nn.functional import all_reduce

        if not self.batch_dice:  # per-sample Dice: DDP's averaging of the local means is the global mean
            return super().forward(x, y, loss_mask)
        if self.apply_nonlin is not None:
            x = self.apply_nonlin(x)
        tp, fp, fn, _ = get_tp_fp_fn_tn(x, y, [0, *range(2, x.dim())], loss_mask, False)
        tp, fp, fn = (all_reduce(value) for value in (tp, fp, fn))
        dice = (2 * tp + self.smooth) / (2 * tp + fp + fn + self.smooth + 1e-8)
        return -(dice if self.do_bg else dice[1:]).mean()
