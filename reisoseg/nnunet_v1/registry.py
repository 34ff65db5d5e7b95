"""Our trainers by name, where nnU-Net's lookup by name (training and prediction) finds them first.

A leaf of the import graph: `reisoseg.nnunet_v1.trainers` registers its classes when imported, which every entry
point does inside `compat.redirected()` before it asks nnU-Net for a trainer by name.
"""
from __future__ import annotations

_TRAINERS: dict[str, type] = {}


def register(cls: type) -> type:
    """Make a trainer class findable by its name (the name stored in checkpoints and typed on command lines)."""
    _TRAINERS[cls.__name__] = cls
    return cls


def trainer_classes() -> dict[str, type]:
    """The trainers registered so far, by name."""
    return dict(_TRAINERS)
