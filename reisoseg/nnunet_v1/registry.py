"""Our trainers by name: where nnU-Net's lookup by name (training and prediction) finds them first."""
from __future__ import annotations


def trainer_classes() -> dict[str, type]:
    """Our trainers by the name stored in checkpoints and typed on command lines."""
    from reisoseg.nnunet_v1.trainers import TRAINERS

    return dict(TRAINERS)
