"""ReIsoSeg trainers on nnU-Net v2's `nnUNetTrainer`; the four RMA trainers differ by their pattern only
(reisoseg.network.anisotropy.with_fixed_patterns). They and the baseline `nnUNetTrainerEM` share the training layer
of reisoseg.nnunet_v2.em_training (durable checkpoints, SIGTERM, time budget).

What the method changes, and nothing else:
- `build_network_architecture`: ReIsoSegRMV6 with the pattern of the planned spacing (or the trainer's fixed one);
  the plans' patch is rounded down to what the pattern divides before v2 reads it;
- `_get_deep_supervision_scales`: the six heads' target scales;
- `_build_loss`: the re-isotropic loss over v2's Dice + cross-entropy (its ignore label and DDP batch Dice kept);
- `set_deep_supervision_enabled`: the network's own switch (v2's reaches into a decoder ours does not have);
- `validation_step`: the pseudo-Dice (hence `checkpoint_best`) from the inference branch's head, not the iso head;
- `_do_i_compile`: no torch.compile unless `nnUNet_compile` asks for it. The PI module draws one of 12 transforms
  (4 axis swaps x 3 resamplings) per training step, and each needs its own graph: dynamo recompiles for each and,
  past its limit of 8, runs the rest uncompiled (documentation/nnunet_v2.md).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from copy import deepcopy
from typing import ClassVar, Iterator

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import nn
from torch._dynamo import OptimizedModule

from reisoseg.errors import ReIsoSegError
from reisoseg.loss import DEFAULT_ANI_WEIGHT, DS_WEIGHTS, ReIsoLoss
from reisoseg.network import ReIsoSegRMV6
from reisoseg.network.anisotropy import (
    PatchDoesNotFit,
    ani_scale_from_spacing,
    deep_supervision_scales,
    fit_patch_size,
    required_divisor,
    with_fixed_patterns,
)
from reisoseg.network.memory import MemoryEstimate, fit_patch_to_memory, training_step_memory
from reisoseg.nnunet_v2.em_training import V2TrainingMixin

COMPILE_VARIABLE = "nnUNet_compile"  # v2's switch for torch.compile


def branches_swapped(heads: list) -> list:
    """The six heads (or targets) with the ani branch first: its head 3, the one inference uses, becomes head 0.
    Its own inverse."""
    return [*heads[3:], *heads[:3]]


class ReIsoSegV2Network(ReIsoSegRMV6):
    """ReIsoSegRMV6 as v2 drives it; `ani_branch_first` puts the inference head first among the six outputs, where
    v2's online evaluation reads."""

    ani_branch_first = False

    def forward(self, x: torch.Tensor, **kwargs):
        outputs = super().forward(x, **kwargs)
        return branches_swapped(outputs) if self.ani_branch_first and self.deep_supervision else outputs


class ReIsoSegTrainer(V2TrainingMixin, nnUNetTrainer):
    """ReIsoSeg on nnU-Net v2. Subclasses pin `ani_scale`; None derives it from the planned spacing."""

    ani_scale: ClassVar[tuple[int, int, int] | None] = None

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(self.with_fitted_patch(plans, configuration), configuration, fold, dataset_json, device)
        self.ani_weight = DEFAULT_ANI_WEIGHT

    @classmethod
    def pattern(cls, spacing) -> tuple[int, int, int]:
        """The pooling pattern: the trainer's own, or the one the planned spacing calls for."""
        return cls.ani_scale or ani_scale_from_spacing(spacing)

    @classmethod
    def with_fitted_patch(cls, plans: dict, configuration: str) -> dict:
        """`plans` with the configuration's patch rounded down to what the pattern divides (v2 reads the patch from
        the plans, and the model folder keeps these plans for inference)."""
        fitted = deepcopy(plans)
        settings = fitted["configurations"][configuration]
        settings["patch_size"] = [int(v) for v in fit_patch_size(settings["patch_size"],
                                                                 cls.pattern(settings["spacing"]))]
        return fitted

    @classmethod
    def fitted_to_memory(cls, plans: dict, configuration: str, budget_bytes: float, num_classes: int,
                         mixed_precision: bool) -> tuple[dict, MemoryEstimate]:
        """`with_fitted_patch(plans)` with the patch shrunk until a training step's estimate (both branches,
        reisoseg.network.memory) fits `budget_bytes`, and that estimate; the plans' batch size stays."""
        fitted = cls.with_fitted_patch(plans, configuration)
        settings = fitted["configurations"][configuration]
        pattern, batch_size = cls.pattern(settings["spacing"]), settings["batch_size"]
        try:
            patch, estimate = fit_patch_to_memory(
                settings["patch_size"], required_divisor(pattern), settings["spacing"], budget_bytes,
                lambda size: training_step_memory(size, batch_size, pattern, num_classes=num_classes,
                                                  mixed_precision=mixed_precision))
        except PatchDoesNotFit as error:
            raise ReIsoSegError(f"{cls.__name__} at batch {batch_size}: {error}") from error
        settings["patch_size"] = [int(v) for v in patch]
        return fitted, estimate

    @classmethod
    def build_network_architecture(cls, plans_manager: PlansManager, configuration_manager: ConfigurationManager,
                                   num_input_channels: int, num_output_channels: int,
                                   enable_deep_supervision: bool = True) -> nn.Module:
        return ReIsoSegV2Network(num_input_channels, num_output_channels, cls.pattern(configuration_manager.spacing),
                                 deep_supervision=enable_deep_supervision)

    def _get_deep_supervision_scales(self):
        if not self.enable_deep_supervision:
            return None
        return deep_supervision_scales(self.pattern(self.configuration_manager.spacing))

    def _build_loss(self):
        """v2's per-head Dice + cross-entropy, taken out of its deep-supervision wrapper, under the re-isotropic
        loss."""
        return ReIsoLoss(super()._build_loss().loss, DS_WEIGHTS, ani_weight=self.ani_weight)

    def _network_module(self) -> ReIsoSegV2Network:
        module = self.network.module if self.is_ddp else self.network
        return module._orig_mod if isinstance(module, OptimizedModule) else module

    def set_deep_supervision_enabled(self, enabled: bool):
        self._network_module().deep_supervision = enabled

    @contextmanager
    def _ani_branch_first(self) -> Iterator[None]:
        """v2's validation step reads head 0: show it the inference head there, and the loss its own order."""
        network, loss = self._network_module(), self.loss
        network.ani_branch_first = True
        self.loss = lambda outputs, targets: loss(branches_swapped(outputs), branches_swapped(targets))
        try:
            yield
        finally:
            network.ani_branch_first, self.loss = False, loss

    def validation_step(self, batch: dict) -> dict:
        """v2's validation step, with the pseudo-Dice of the inference head."""
        with self._ani_branch_first():
            return super().validation_step({**batch, "target": branches_swapped(batch["target"])})

    def _do_i_compile(self) -> bool:
        """v2's rule when `nnUNet_compile` is set; otherwise no compiling (see the module docstring)."""
        if COMPILE_VARIABLE in os.environ:
            return super()._do_i_compile()
        if self.device.type == "cuda":
            self.print_to_log_file(f"torch.compile off: the PI module's 12 transforms would each need a graph, more "
                                   f"than dynamo's recompile limit; set {COMPILE_VARIABLE}=1 to compile anyway")
        return False


class nnUNetTrainerEM(V2TrainingMixin, nnUNetTrainer):  # noqa: N801  (nnU-Net's naming)
    """v2's own trainer with the training layer ReIsoSeg's trainers have: the baseline they are compared with."""


TRAINERS: dict[str, type[nnUNetTrainer]] = {
    "ReIsoSegTrainer": ReIsoSegTrainer, **with_fixed_patterns(ReIsoSegTrainer), "nnUNetTrainerEM": nnUNetTrainerEM,
    "nnUNetTrainer": nnUNetTrainer,
}
