"""Every redirection of nnU-Net v1 (`nnunet==1.7.1`) lives here, applied only inside `redirected()` (and
`scoring_annotated_voxels`) and undone on leaving; the installed package is never edited, and another nnunet
version is refused with one line rather than patched blindly.

Handled (see documentation/nnunet_v1_integration.md):
1. Prediction restores trainers and checkpoints through model_files.py (weights-only, whatever the environment).
2. Trainer lookup by name searches our registry first, then nnU-Net's package (training and prediction); the
   callers import `reisoseg.nnunet_v1.trainers` inside the block, which registers them.
3. batchgenerators 0.25.5 can hang at exit: `finish_augmenters` stops the workers explicitly.
4. Augmentation workers default to the CPU count instead of nnU-Net's hostname table (12 + 6).
5. `torch.cuda.amp` FutureWarnings are silenced; fp16 is used on CUDA only (our trainers use `torch.amp`).
6. SciPy deprecation warnings of `scipy.ndimage.filters`/`interpolation` are silenced (scipy < 2 is pinned).
7. `.model.pkl` and `plans.pkl` of model folders are read with a restricted unpickler (reisoseg.safe_loading).
(8 and 9 of the guide's table live in em_training.py and sparse.py.)
10. nnU-Net binds its folders (`nnunet.paths`) when first imported; every `redirected()` points the loaded modules at
    the folders the environment names now, so setting them after an import (a second demo, a notebook) takes
    effect. These follow the environment and are not undone.
11. The fold validation scores every voxel: `scoring_annotated_voxels` makes it (and the postprocessing it
    determines) leave out the voxels of a sparse task's ignore label.
"""
from __future__ import annotations

import os
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import version
from typing import Any

from reisoseg.errors import ReIsoSegError
from reisoseg.nnunet_v1.model_files import restore_trainer
from reisoseg.nnunet_v1.registry import trainer_classes
from reisoseg.safe_loading import safe_load_pickle

SUPPORTED_VERSION = "1.7.1"  # the nnunet release every redirection below was written against
_lock = threading.Lock()
_depth = 0  # redirected() blocks open now, in any thread
_saved: list[tuple[Any, str, Any]] = []  # (module, attribute, nnU-Net's own value) while redirected


def configure_environment() -> None:
    """Set environment defaults nnU-Net reads at import time. Must run before the first `import nnunet`."""
    os.environ.setdefault("nnUNet_n_proc_DA", str(max(1, os.cpu_count() or 1)))
    warnings.filterwarnings("ignore", category=FutureWarning, message=r".*torch\.cuda\.amp.*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, message=r".*scipy\.ndimage\..*")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"scipy\.ndimage")


def check_version() -> None:
    """ReIsoSegError unless the installed nnunet is the release the redirections were written for."""
    installed = version("nnunet")
    if installed != SUPPORTED_VERSION:
        raise ReIsoSegError(f"nnunet {installed} is installed, but reisoseg's nnU-Net v1 engine is written for "
                            f"nnunet=={SUPPORTED_VERSION}: pip install nnunet=={SUPPORTED_VERSION}")


def _find_trainer(folder: Any, trainer_name: str, current_module: str) -> Any:
    ours = trainer_classes().get(trainer_name)
    return ours if ours is not None else _original_find(folder, trainer_name, current_module)


_original_find: Any = None


def _follow_environment() -> None:
    import nnunet.paths as v1_paths

    raw, results = os.environ.get("nnUNet_raw_data_base") or None, os.environ.get("RESULTS_FOLDER") or None
    current = {"base": raw, "preprocessing_output_dir": os.environ.get("nnUNet_preprocessed") or None,
               "network_training_output_dir_base": results,
               "network_training_output_dir": os.path.join(results, v1_paths.my_output_identifier) if results else None,
               "nnUNet_raw_data": os.path.join(raw, "nnUNet_raw_data") if raw else None,
               "nnUNet_cropped_data": os.path.join(raw, "nnUNet_cropped_data") if raw else None}
    bound = {name: getattr(v1_paths, name) for name in current}
    for module_name, module in list(sys.modules.items()):
        if module is None or not (module_name == "nnunet" or module_name.startswith("nnunet.")):
            continue
        names = vars(module)
        for name, value in current.items():
            if name in names and names[name] is bound[name]:  # the object imported from nnunet.paths
                setattr(module, name, value)


def _apply() -> None:
    global _original_find
    configure_environment()
    import nnunet.inference.predict as v1_predict
    import nnunet.run.default_configuration as v1_config
    import nnunet.training.model_restore as v1_restore

    _original_find = v1_restore.recursive_find_python_class
    for module, name, value in ((v1_restore, "recursive_find_python_class", _find_trainer),
                                (v1_config, "recursive_find_python_class", _find_trainer),
                                (v1_restore, "load_pickle", safe_load_pickle),
                                (v1_predict, "load_pickle", safe_load_pickle),
                                # same positional order as nnU-Net's; its callers always pass the folds
                                (v1_predict, "load_model_and_checkpoint_files", restore_trainer)):
        _saved.append((module, name, getattr(module, name)))
        setattr(module, name, value)


def _undo() -> None:
    while _saved:
        module, name, value = _saved.pop()
        setattr(module, name, value)


@contextmanager
def redirected() -> Iterator[None]:
    """nnU-Net v1 with the redirections above for the duration of the block, pointed at the folders the environment
    names now. Nested and concurrent blocks (threads of one process) share one application, undone when the last
    one leaves."""
    global _depth
    with _lock:
        if _depth == 0:
            check_version()
            _apply()
        _depth += 1
        _follow_environment()
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _undo()


@contextmanager
def scoring_annotated_voxels(ignore: int) -> Iterator[None]:
    """Within: nnU-Net's validation and postprocessing search evaluate with `AnnotatedNiftiEvaluator(ignore)`."""
    import nnunet.postprocessing.connected_components as v1_postprocessing
    import nnunet.training.network_training.nnUNetTrainer as v1_trainer
    from nnunet.evaluation.evaluator import aggregate_scores

    from reisoseg.nnunet_v1.annotated_evaluation import AnnotatedNiftiEvaluator

    def annotated_scores(pairs, *args, **kwargs):
        return aggregate_scores(pairs, *args, **{**kwargs, "evaluator": AnnotatedNiftiEvaluator(ignore)})

    modules = (v1_trainer, v1_postprocessing)
    for module in modules:
        module.aggregate_scores = annotated_scores
    try:
        yield
    finally:
        for module in modules:
            module.aggregate_scores = aggregate_scores


def finish_augmenters(trainer: Any) -> None:
    """Stop the training/validation augmentation workers so the process can exit (batchgenerators hang)."""
    for name in ("tr_gen", "val_gen"):
        generator = getattr(trainer, name, None)
        finish = getattr(generator, "_finish", None)
        if finish is not None:
            finish()
