"""Every redirection of nnU-Net v1 (`nnunet==1.7.1`) lives here; the installed package is never edited.

Handled (see documentation/nnunet_v1_integration.md):
1. torch >= 2.6 loads checkpoints with `weights_only=True`: the numpy types nnU-Net stores are allow-listed.
2. Trainer lookup by name searches our registry first, then nnU-Net's package (training and prediction).
3. batchgenerators 0.25.5 can hang at exit: `finish_augmenters` stops the workers explicitly.
4. Augmentation workers default to the CPU count instead of nnU-Net's hostname table (12 + 6).
5. `torch.cuda.amp` FutureWarnings are silenced; fp16 is used on CUDA only (our trainers use `torch.amp`).
6. SciPy deprecation warnings of `scipy.ndimage.filters`/`interpolation` are silenced (scipy < 2 is pinned).
7. `.model.pkl` and `plans.pkl` of model folders are read with a restricted unpickler.
"""
from __future__ import annotations

import os
import warnings
from typing import Any

_installed = False


def configure_environment() -> None:
    """Set environment defaults nnU-Net reads at import time. Must run before the first `import nnunet`."""
    os.environ.setdefault("nnUNet_n_proc_DA", str(max(1, os.cpu_count() or 1)))
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.cuda\.amp.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*scipy\.ndimage\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"scipy\.ndimage")


def _allow_numpy_in_checkpoints() -> None:
    import numpy as np
    import torch

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray  # numpy 2, numpy 1
    safe: list[Any] = [np.ndarray, np.dtype, multiarray.scalar, multiarray._reconstruct]
    safe += [type(np.dtype(code)) for code in "?bBhHiIlLqQefdgFDG"]
    torch.serialization.add_safe_globals(safe)


def _find_trainer(folder: Any, trainer_name: str, current_module: str) -> Any:
    from reisoseg.nnunet_v1.registry import trainer_classes

    ours = trainer_classes().get(trainer_name)
    return ours if ours is not None else _original_find(folder, trainer_name, current_module)


_original_find: Any = None


def install() -> None:
    """Apply the redirections (idempotent)."""
    global _installed, _original_find
    if _installed:
        return
    configure_environment()
    import nnunet.inference.predict as v1_predict
    import nnunet.run.default_configuration as v1_config
    import nnunet.training.model_restore as v1_restore

    from reisoseg.nnunet_v1.registry import safe_load_pickle

    _allow_numpy_in_checkpoints()
    _original_find = v1_restore.recursive_find_python_class
    v1_restore.recursive_find_python_class = _find_trainer
    v1_config.recursive_find_python_class = _find_trainer
    v1_restore.load_pickle = safe_load_pickle
    v1_predict.load_pickle = safe_load_pickle
    _installed = True


def finish_augmenters(trainer: Any) -> None:
    """Stop the training/validation augmentation workers so the process can exit (batchgenerators hang)."""
    for name in ("tr_gen", "val_gen"):
        generator = getattr(trainer, name, None)
        finish = getattr(generator, "_finish", None)
        if finish is not None:
            finish()
