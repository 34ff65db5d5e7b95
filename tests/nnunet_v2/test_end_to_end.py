"""The v2 engine end to end on a tiny dataset with the instance target: synth --engine v2, v2's own planning,
`reisoseg train --engine v2`, `reisoseg predict` and `reisoseg segment` on the v2 model (engine found from the
results), the decoding calibrated on the fold's validation cases, continuing with -c through the weights-only loader,
and a poisoned checkpoint refused."""
from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="the nnunetv2 extra is not installed")

import zarr  # noqa: E402

import reisoseg  # noqa: E402
from reisoseg.instances.scores import read_scores  # noqa: E402
from reisoseg.io.nifti import read_nifti  # noqa: E402
from reisoseg.io.volume import open_volume, write_volume  # noqa: E402
from reisoseg.safe_loading import safe_load_checkpoint  # noqa: E402
from tests.conftest import BIN, TouchesMarker, assert_one_line_error, run_command, run_reisoseg  # noqa: E402

ONE_EPOCH = ["--iterations_per_epoch", "2", "--device", "cpu", "--disable_validation_inference"]


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    root = tmp_path_factory.mktemp("v2")
    env = {**os.environ, "OMP_NUM_THREADS": "2", "nnUNet_n_proc_DA": "1", "PYTHONUNBUFFERED": "1",
           **{name: str(root / name) for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}}
    made = run_reisoseg(["synth", "--engine", "v2", "--task", "601", "--name", "Tiny", "--num_training", "5",
                         "--num_test", "1", "--shape", "12", "48", "48", "--seed", "3", "--instances"], env)
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


@pytest.fixture(scope="module")
def trained(planned):
    env, root = planned
    fold = _fold(root)
    first = _train(env, "--epochs", "1")
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.splitlines() == [f"done: {fold}"]  # v2's messages went to the fold's engine.log
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "engine.log").is_file()
    assert (fold.parent / "instances.json").is_file()  # the instance target's settings, for decoding
    return env, root


def test_v2_predicts_cases_with_objects_and_refuses_a_poisoned_checkpoint(trained):
    env, root = trained
    fold = _fold(root)
    cases = root / "nnUNet_raw" / "Dataset601_Tiny" / "imagesTs"
    predicted = run_reisoseg(["predict", "-i", str(cases), "-o", str(root / "predictions"), "-t", "601", "-f", "0",
                              "--disable_tta", "--device", "cpu", "--instances", "-z"], env)  # no --engine: found
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    image, spacing = read_nifti(cases / "synth_005_0000.nii.gz")
    segmentation, segmentation_spacing = read_nifti(root / "predictions" / "synth_005.nii.gz")
    assert segmentation.shape == image.shape and segmentation_spacing == spacing
    assert set(np.unique(segmentation)) <= {0, 1}  # the boundary class folded back into mitochondria
    probabilities = np.load(root / "predictions" / "synth_005.npz")["probabilities"]
    assert probabilities.shape == (3, *image.shape)
    np.testing.assert_allclose(probabilities.sum(0), 1, atol=1e-4)
    objects, _ = read_nifti(root / "predictions" / "instances" / "synth_005.nii.gz")
    scores = read_scores(root / "predictions" / "instances" / "synth_005.nii.gz")
    assert objects.shape == image.shape and set(scores) == set(np.unique(objects)) - {0}
    assert not objects[segmentation == 0].any()  # objects lie inside the semantic mitochondria
    blockwise = reisoseg.segment(image, spacing, model=str(fold.parent), folds=["0"], block=(6, 24, 24), tta=False,
                                 device="cpu", progress=False)
    assert (blockwise == segmentation).mean() >= 0.999  # v2's in-memory prediction, block by block

    shutil.copy(fold / "checkpoint_final.pth", root / "trained.pth")
    marker = root / "pwned"
    (fold / "checkpoint_final.pth").write_bytes(pickle.dumps(TouchesMarker(marker)))
    try:
        refused = _train(env, "--epochs", "2", "-c")
        refused_predict = run_reisoseg(["predict", "-i", str(cases), "-o", str(root / "refused"), "-t", "601"], env)
    finally:
        shutil.copy(root / "trained.pth", fold / "checkpoint_final.pth")
    assert_one_line_error(refused, "refusing to load a model file", "checkpoint_final.pth")
    assert_one_line_error(refused_predict, "refusing to load a model file", "checkpoint_final.pth")
    assert not marker.exists()


def test_v2_calibrates_the_decoding_on_the_cases_its_fold_held_out(trained, tmp_path):
    env, root = trained
    model = _fold(root).parent
    copy = tmp_path / model.parent.name / model.name  # calibration rewrites instances.json
    shutil.copytree(model, copy)
    result = run_reisoseg(["calibrate-instances", str(copy), "--device", "cpu"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    held_out = json.loads((root / "nnUNet_preprocessed" / "Dataset601_Tiny" / "splits_final.json").read_text())[0]
    record = json.loads((copy / "instances.json").read_text())["calibration"]
    assert record["validation_cases"] == held_out["val"]
    assert record["after"]["ap_75"] >= record["before"]["ap_75"]
    assert f"calibrated on {len(held_out['val'])} validation volumes" in result.stdout


def test_v2_validates_a_trained_fold_again_with_val(trained):
    env, root = trained
    fold = _fold(root)
    result = run_reisoseg(["train", "--engine", "v2", "3d_fullres", "ReIsoSegTrainer", "601", "0", "-val", "--device",
                           "cpu"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    held_out = json.loads((root / "nnUNet_preprocessed" / "Dataset601_Tiny" / "splits_final.json").read_text())[0]
    summary = json.loads((fold / "validation" / "summary.json").read_text())
    assert sorted(Path(case["prediction_file"]).name for case in summary["metric_per_case"]) \
        == sorted(f"{case}.nii.gz" for case in held_out["val"])
    assert 0 <= summary["foreground_mean"]["Dice"] <= 1
    best = run_reisoseg(["train", "--engine", "v2", "3d_fullres", "nnUNetTrainerEM", "601", "1", "-val", "--valbest"],
                        env)
    assert_one_line_error(best, "fold_1/checkpoint_best.pth: not found; train the fold first")


def test_v2_trains_on_derived_plans_with_either_optimizer_and_em_augmentation(trained):
    env, root = trained
    derived = ["--patch_size", "8", "32", "32", "--batch_size", "3", "--epochs", "1"]
    for trainer, optimizer, extra in (("ReIsoSegTrainer", "adamw", ["--em_augmentation"]),
                                      ("nnUNetTrainerEM", "sgd", [])):  # the baseline's U-Net planned for the patch
        result = run_reisoseg(["train", "--engine", "v2", "3d_fullres", trainer, "601", "0", *derived, "--optimizer",
                               optimizer, *extra, *ONE_EPOCH], env)
        model = root / "nnUNet_results" / "Dataset601_Tiny" / f"{trainer}__nnUNetPlans_patch8x32x32_batch3__3d_fullres"
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.splitlines() == [f"done: {model / 'fold_0'}"]
        checkpoint = safe_load_checkpoint(model / "fold_0" / "checkpoint_final.pth")
        assert ("betas" in checkpoint["optimizer_state"]["param_groups"][0]) == (optimizer == "adamw")
        planned = json.loads((model / "plans.json").read_text())["configurations"]["3d_fullres"]
        assert planned["patch_size"] == [8, 32, 32] and planned["batch_size"] == 3
        logs = "".join(log.read_text() for log in (model / "fold_0").glob("training_log_*.txt"))
        assert ("EM defect augmentation: SectionDefectsTransform" in logs) == bool(extra)
    switched = run_reisoseg(["train", "--engine", "v2", "3d_fullres", "ReIsoSegTrainer", "601", "0", *derived, "-c",
                             *ONE_EPOCH], env)
    assert_one_line_error(switched, "trained with adamw; continue it with --optimizer adamw")
    unet = planned["architecture"]["arch_kwargs"]
    assert unet["n_stages"] == len(unet["strides"]) == len(unet["kernel_sizes"]) == len(unet["features_per_stage"]) \
        == len(unet["n_conv_per_stage"]) == len(unet["n_conv_per_stage_decoder"]) + 1
    refused = run_reisoseg(["train", "--engine", "v2", "3d_fullres", "nnUNetTrainerEM", "601", "0", "--patch_size",
                            "8", "30", "30", *ONE_EPOCH], env)
    assert_one_line_error(refused, "--patch_size [8, 30, 30]: nnU-Net v2's planner needs [8, 32, 32]")


@pytest.mark.slow  # 25 s; the blockwise computation it checks is the v1 engine's, tested in CI there
def test_v2_em_volumes_and_blockwise_segmentation_equal_the_in_memory_prediction(trained):
    env, root = trained
    image, spacing = read_nifti(root / "nnUNet_raw" / "Dataset601_Tiny" / "imagesTs" / "synth_005_0000.nii.gz")
    write_volume(root / "stack.tif", image, spacing)
    model = ["-t", "601", "-f", "0", "--disable_tta", "--device", "cpu"]
    predicted = run_reisoseg(["predict", "-i", str(root / "stack.tif"), "-o", str(root / "em" / "seg.tif"), *model,
                              "--instances"], env)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    semantic, objects = open_volume(root / "em" / "seg.tif"), open_volume(root / "em" / "seg_instances.tif")
    assert semantic.spacing == pytest.approx(spacing) and objects.spacing == pytest.approx(spacing)
    assert objects.shape == image.shape and np.issubdtype(objects.read().dtype, np.unsignedinteger)

    segmented = run_reisoseg(["segment", "-i", str(root / "stack.tif"), "-o", str(root / "blocks.zarr"), *model,
                              "--block", "6", "24", "24", "--save_probabilities", "--instances"], env)
    assert segmented.returncode == 0, segmented.stderr[-3000:]
    blocks = zarr.open(str(root / "blocks.zarr"), mode="r")
    in_memory = semantic.read()
    agreement = (np.asarray(blocks["semantic"]) == in_memory).mean()
    assert agreement >= 0.999, agreement
    assert np.asarray(blocks["0"]).shape == image.shape


@pytest.mark.slow  # three more v2 trainings, ~60 s
def test_v2_preempted_training_continues_where_it_stopped_and_a_time_budget_ends_it(trained):
    env, root = trained
    fold = root / "nnUNet_results" / "Dataset601_Tiny" / "nnUNetTrainerEM__nnUNetPlans__3d_fullres" / "fold_0"
    run = [sys.executable, "-m", "reisoseg.commands.main", "train", "--engine", "v2", "3d_fullres", "nnUNetTrainerEM",
           "601", "0", "--epochs", "5", "--checkpoint_minutes", "0", *ONE_EPOCH]
    with subprocess.Popen(run, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          start_new_session=True) as preempted:
        deadline = time.monotonic() + 300
        while not any("Epoch 2" in log.read_text() for log in fold.glob("training_log_*.txt")):
            assert preempted.poll() is None and time.monotonic() < deadline, preempted.stderr.read()[-3000:]
            time.sleep(0.05)
        preempted.send_signal(signal.SIGTERM)  # as a cluster's scheduler asks a job to stop
        assert preempted.wait(timeout=120) == 143
        stderr = preempted.stderr.read()
    stopped = re.search(r"reisoseg: stopped: SIGTERM during epoch (\d+)", stderr)
    assert stopped and "Traceback" not in stderr, stderr
    epoch = int(stopped.group(1))
    assert epoch >= 2 and safe_load_checkpoint(fold / "checkpoint_latest.pth")["current_epoch"] == epoch
    assert not (fold / "checkpoint_final.pth").exists()

    resumed = run_reisoseg([*run[3:], "-c", "--budget_minutes", "0.001"], env)  # ends after the epoch it repeats
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    log = sorted(fold.glob("training_log_*.txt"))[-1].read_text()
    assert f"Epoch {epoch}" in log and f"Epoch {epoch - 1}" not in log and f"Epoch {epoch + 1}" not in log
    assert f"{epoch + 1} epochs" in log  # the budget's refit
    assert safe_load_checkpoint(fold / "checkpoint_final.pth")["current_epoch"] == epoch + 1
    assert not (fold / "checkpoint_latest.pth").exists()


@pytest.mark.slow  # nnUNetv2_train's first epoch is 250 iterations
def test_nnunetv2_train_runs_our_trainer_through_nnunet_ext_trainer(request):
    try:
        import torchvision  # noqa: F401  (v2's own trainer walk imports it, through timm)
    except Exception as error:  # noqa: BLE001  (a mismatched build raises RuntimeError, not ImportError)
        pytest.skip(f"nnUNetv2_train needs a torchvision that matches this torch: {str(error).splitlines()[0]}")
    from reisoseg.nnunet_v2.external import FOLDER

    env, root = request.getfixturevalue("trained")  # after the check: no training to skip afterwards
    output = root / "nnUNet_results" / "Dataset601_Tiny" / "ReIsoSegRMA8V6Trainer__nnUNetPlans__3d_fullres" / "fold_1"
    command = [str(BIN / "nnUNetv2_train"), "601", "3d_fullres", "1", "-tr", "ReIsoSegRMA8V6Trainer", "-device", "cpu"]
    with subprocess.Popen(command, env={**env, "nnUNet_extTrainer": str(FOLDER)}, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as process:
        try:
            deadline = time.monotonic() + 900
            while time.monotonic() < deadline and process.poll() is None:
                logs = list(output.glob("training_log_*.txt"))
                if logs and "Epoch 1" in logs[0].read_text():  # epoch 0 finished
                    break
                time.sleep(2)
            assert process.poll() is None, process.stderr.read()[-3000:]
        finally:
            os.killpg(process.pid, signal.SIGKILL)
    assert "Epoch 1" in next(output.glob("training_log_*.txt")).read_text()
