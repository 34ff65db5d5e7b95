"""The optimizers our trainers offer, on either engine: the engine's SGD (nnU-Net's: momentum 0.99, Nesterov), or
AdamW, which learns more in a budget of a few dozen iterations (the demo's), under the same poly schedule."""
from __future__ import annotations

from typing import Iterable

import torch

OPTIMIZERS = ("sgd", "adamw")


def adamw(parameters: Iterable[torch.nn.Parameter], initial_lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW at the schedule's starting rate, with the engine's weight decay."""
    return torch.optim.AdamW(parameters, initial_lr, weight_decay=weight_decay)
