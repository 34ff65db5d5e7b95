"""Re-isotropic loss: total = (1 - λ)·L_iso + λ·L_ani over six weighted deep-supervision heads.

Pure PyTorch: the base per-head loss (nnU-Net's Dice + CE in our trainers) is passed in, so any framework can use it.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

# Reference weights [1, .5, .25] per branch, divided by 3.5 over all six heads: the six weights sum to 1, so with
# λ = 0.5 the effective weight sum of the total is 0.5, half of vanilla nnU-Net's (kept so that
# learning-rate behaviour matches the reference).
DS_WEIGHTS = tuple(w / 3.5 for w in (1.0, 0.5, 0.25, 1.0, 0.5, 0.25))
DEFAULT_ANI_WEIGHT = 0.5


class ReIsoLoss(torch.nn.Module):
    """Deep-supervision loss over (iso heads 0-2, ani heads 3-5) with `MultipleOutputLoss2`'s call signature.

    Args:
        base_loss: loss(logits, target) for one head, e.g. Dice + CE.
        weights: one weight per head; heads with weight 0 are skipped.
        ani_weight: λ in [0, 1]; the reference fixes it at 0.5.

    After each call, `last_iso` and `last_ani` hold the detached branch losses (for logging and model selection).
    """

    def __init__(self, base_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 weights: Sequence[float] = DS_WEIGHTS, ani_weight: float = DEFAULT_ANI_WEIGHT):
        super().__init__()
        if not 0.0 <= ani_weight <= 1.0:
            raise ValueError(f"ani_weight (lambda) must lie in [0, 1], got {ani_weight}")
        if len(weights) != 6:
            raise ValueError(f"ReIsoLoss expects six head weights (3 iso, 3 ani), got {len(weights)}")
        self.base_loss = base_loss
        self.weights = tuple(float(w) for w in weights)
        self.ani_weight = float(ani_weight)
        self.last_iso = self.last_ani = float("nan")

    def branch_losses(self, outputs: Sequence[torch.Tensor],
                      targets: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_iso, L_ani): weighted sums of the base loss over heads 0-2 and 3-5."""
        if len(outputs) != 6 or len(targets) != 6:
            raise ValueError(f"expected 6 outputs and 6 targets, got {len(outputs)} and {len(targets)}")
        per_head = [w * self.base_loss(o, t) if w else None for w, o, t in zip(self.weights, outputs, targets)]
        zero = outputs[0].new_zeros(())
        l_iso = sum((h for h in per_head[:3] if h is not None), zero)
        l_ani = sum((h for h in per_head[3:] if h is not None), zero)
        return l_iso, l_ani

    def forward(self, outputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]) -> torch.Tensor:
        l_iso, l_ani = self.branch_losses(outputs, targets)
        self.last_iso, self.last_ani = float(l_iso.detach()), float(l_ani.detach())
        return (1.0 - self.ani_weight) * l_iso + self.ani_weight * l_ani
