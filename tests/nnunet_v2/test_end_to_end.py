"""The v2 engine end to end on a tiny dataset: synth --engine v2, v2's own planning, `reisoseg train --engine v2`,
`reisoseg predict --engine v2`, continuing with -c through the weights-only loader, and a poisoned checkpoint
refused."""
from __future__ import annotations

import os
import pickle
import shutil

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="the nnunetv2 extra is not installed")

from reisoseg.io.nifti import read_nifti  # noqa: E402
from tests.conftest import BIN, assert_one_line_error, run_command, run_reisoseg  # noqa: E402

ONE_EPOCH = ["--iterations_per_epoch", "2", "--device", "cpu", "--disable_validation_inference"]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "nnUNet_n_proc_DA": "1", "PYTHONUNBUFFERED": "1",
           **{name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    made = run_reisoseg(["synth", "--engine", "v2", "--task", "601", "--name", "Tiny", "--num_training", "5",
                         "--num_test", "1", "--shape", "12", "48", "48", "--seed", "3"], env)
    assert made.returncode == 0, made.stderr
    planned = run_command([str(BIN / "nnUNetv2_plan_and_preprocess"), "-d", "601", "-c", "3d_fullres", "-np", "1",
                           "-npfp", "1"], env, timeout=600)
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
    return env, root


def _fold(root):
    return root / "nnUNet_results" / "Dataset601_Tiny" / "ReIsoSegTrainer__nnUNetPlans__3d_fullres" / "fold_0"


def _train(env, *extra):
    return run_reisoseg(["train", "--engine", "v2", "3d_fullres", "ReIsoSegTrainer", "601", "0", *extra, *ONE_EPOCH],
                        {**env, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"})  # what v1 users often set: no effect here


def test_v2_trains_and_refuses_to_continue_from_a_poisoned_checkpoint(planned):
    env, root = planned
    fold = _fold(root)
    first = _train(env, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.splitlines() == [f"done: {fold}"]  # v2's messages went to the fold's engine.log
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "engine.log").is_file()

    cases = root / "nnUNet_raw" / "Dataset601_Tiny" / "imagesTs"
    predicted = run_reisoseg(["predict", "--engine", "v2", "-i", str(cases), "-o", str(root / "predictions"),
                              "-t", "601", "-f", "0", "--disable_tta", "--device", "cpu"], env)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    image, spacing = read_nifti(cases / "synth_005_0000.nii.gz")
    segmentation, segmentation_spacing = read_nifti(root / "predictions" / "synth_005.nii.gz")
    assert segmentation.shape == image.shape and segmentation_spacing == spacing
    assert set(np.unique(segmentation)) <= {0, 1, 2}

    shutil.copy(fold / "checkpoint_final.pth", root / "trained.pth")
    marker = root / "pwned"
    (fold / "checkpoint_final.pth").write_bytes(pickle.dumps(_RunsCode(marker)))
    try:
        refused = _train(env, "--epochs", "2", "-c")
    finally:
        shutil.copy(root / "trained.pth", fold / "checkpoint_final.pth")
    assert_one_line_error(refused, "refusing to load a model file", "checkpoint_final.pth")
    assert not marker.exists()


@pytest.mark.slow  # one more v2 training, ~15 s
def test_v2_continues_from_its_checkpoint_read_weights_only(planned):
    env, root = planned
    fold = _fold(root)
    if not (fold / "checkpoint_final.pth").is_file():
        assert _train(env, "--epochs", "1").returncode == 0
    resumed = _train(env, "--epochs", "2", "-c")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = sorted(fold.glob("training_log_*.txt"))[-1].read_text()
    assert "Epoch 1" in log and "Epoch 0" not in log  # continued, not restarted


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
