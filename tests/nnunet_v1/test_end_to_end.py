"""Synthesise a tiny task, plan it with nnU-Net v1, train/continue/validate/predict through our commands."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from reisoseg.commands.main import main
from reisoseg.layout import ENGINE_LOG, FINAL_CHECKPOINT, checkpoint_file, fold_folder, model_folder
from tests.conftest import NNUNET_VARIABLES, TASK, TRAIN, TouchesMarker, assert_one_line_error, run_reisoseg


def _log(fold_dir: Path) -> str:
    return "".join(p.read_text() for p in sorted(fold_dir.glob("training_log_*.txt")))


def test_training_writes_checkpoints_validation_and_branch_losses(trained):
    env, root, model = trained
    fold = fold_folder(model, 0)
    for path in (checkpoint_file(fold), Path(f"{checkpoint_file(fold)}.pkl"), fold / "progress.png"):
        assert path.is_file()
    assert list((fold / "validation_raw").glob("*.nii.gz"))
    log = _log(fold)
    assert "ani_scale [2, 2, 2]" in log and "ratio 8.00" in log
    assert log.count("train_iso") == 2 and "val_ani" in log


def test_validation_only_rewrites_summary(trained):
    env, root, model = trained
    summary = model / "fold_1" / "validation_raw" / "summary.json"
    summary.unlink()
    result = run_reisoseg(["train", "3d_fullres", "ReIsoSegTrainer", "Tiny", "1", "-val", "--device", "cpu"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert summary.is_file()


def test_predict_two_folds_keeps_shape_and_spacing(trained):
    env, root, model = trained
    images = Path(env["nnUNet_raw_data_base"]) / "nnUNet_raw_data" / TASK / "imagesTs"
    out = root / "predictions"
    result = run_reisoseg(["predict", "-i", str(images), "-o", str(out), "-t", "501", "-tr", "ReIsoSegTrainer",
                           "-f", "0", "1", "--disable_tta", "--device", "cpu"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [f"wrote {out}"]
    assert "postprocessing" not in (out / ENGINE_LOG).read_text() + result.stderr  # no warning that does not apply
    source = sitk.ReadImage(str(images / "synth_005_0000.nii.gz"))
    prediction = sitk.ReadImage(str(out / "synth_005.nii.gz"))
    assert prediction.GetSize() == source.GetSize() == (48, 48, 12)
    assert np.allclose(prediction.GetSpacing(), source.GetSpacing()) and np.allclose(source.GetSpacing(), (5, 5, 40))
    assert set(np.unique(sitk.GetArrayFromImage(prediction))) == {0, 1}  # not all background


def test_nnunet_baseline_trainer_runs_through_our_command(trained):
    env, root, model = trained
    result = run_reisoseg(["train", "3d_fullres", "nnUNetTrainerV2", TASK, "0", "--epochs", "1",
                           "--iterations_per_epoch", "2", "--device", "cpu", "--disable_postprocessing_on_folds"],
                          env)
    assert result.returncode == 0, result.stderr[-3000:]
    baseline = model_folder(env["RESULTS_FOLDER"], TASK, "nnUNetTrainerV2")
    assert checkpoint_file(fold_folder(baseline, 0)).is_file()


def test_environment_errors(trained):
    env, root, model = trained
    unset = {k: v for k, v in env.items() if k != "nnUNet_preprocessed"}
    assert_one_line_error(run_reisoseg(["train", "3d_fullres", "ReIsoSegTrainer", TASK, "0", *TRAIN], unset),
                          "environment variable nnUNet_preprocessed is not set")
    missing = root / "missing_results"
    result = run_reisoseg(["train", "3d_fullres", "ReIsoSegTrainer", TASK, "0", *TRAIN],
                          {**env, "RESULTS_FOLDER": str(missing)})
    assert_one_line_error(result, f"RESULTS_FOLDER={missing}: folder does not exist")
    assert not missing.exists()


@pytest.mark.parametrize("trainer, task, fold, fragment", [
    ("NoSuchTrainer", TASK, "0", "unknown trainer 'NoSuchTrainer'"),
    ("ReIsoSegTrainer", "999", "0", "unknown task '999'"),
    ("ReIsoSegTrainer", TASK, "seven", "unknown fold 'seven'"),
    ("ReIsoSegRMA1V6Trainer", TASK, "0", "must be a multiple of 16"),
])
def test_training_errors(trained, trainer, task, fold, fragment, monkeypatch, capsys):
    for name in NNUNET_VARIABLES:  # in this process: no start-up per case
        monkeypatch.setenv(name, trained[0][name])
    assert main(["train", "3d_fullres", trainer, task, fold, *TRAIN]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reisoseg: error:")]
    assert len(errors) == 1 and fragment in errors[0], errors


def test_missing_checkpoints_are_reported(trained, monkeypatch, capsys):
    env, root, model = trained
    images = Path(env["nnUNet_raw_data_base"]) / "nnUNet_raw_data" / TASK / "imagesTs"
    assert_one_line_error(run_reisoseg(["train", "3d_fullres", "ReIsoSegTrainer", TASK, "3", "-val"], env),
                          "checkpoint not found")
    for name in NNUNET_VARIABLES:  # prediction's checks, in this process
        monkeypatch.setenv(name, env[name])
    for extra, fragment in ((["-f", "0", "-chk", "model_best_missing"], "checkpoint not found"),
                            (["-f", "2"], "fold 2 was not trained")):
        assert main(["predict", "-i", str(images), "-o", str(root / "p2"), "-t", "501", *extra]) == 1
        assert fragment in capsys.readouterr().err


POISONED_FILES = [f"fold_0/{FINAL_CHECKPOINT}.model.pkl", "plans.pkl", f"fold_0/{FINAL_CHECKPOINT}.model"]
# What many v1 users set; torch then protects no load that does not say weights_only (refused without it too)
PERMISSIVE_TORCH = {"TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def _poisoned_copy(model: Path, root: Path, poisoned: str, trainer: str) -> tuple[Path, Path]:
    """A copy of `model` under another trainer's name whose file `poisoned` runs `touch MARKER` when unpickled."""
    evil = model.parent / f"{trainer}__{model.name.split('__', 1)[1]}"
    shutil.rmtree(evil, ignore_errors=True)
    shutil.copytree(model, evil)
    marker = root / f"pwned_{trainer}"
    marker.unlink(missing_ok=True)
    (evil / poisoned).write_bytes(pickle.dumps({"init": TouchesMarker(marker), "name": "ReIsoSegTrainer"}))
    return evil, marker


def _copy_of_fold_1(model: Path, folder: Path) -> Path:
    """`folder` holding the model's plans and fold 1, nothing else."""
    folder.mkdir()
    shutil.copy2(model / "plans.pkl", folder)
    shutil.copytree(model / "fold_1", folder / "fold_1")
    return folder


def _files(folder: Path) -> dict[str, float]:
    return {str(path.relative_to(folder)): path.stat().st_mtime for path in folder.rglob("*")}


def test_loading_a_moved_model_writes_nothing_there_or_where_it_was_trained(trained, tmp_path):
    import torch

    from reisoseg.nnunet_v1.block_predictor import NnunetV1Model

    env, root, model = trained
    moved = _copy_of_fold_1(model, tmp_path / "moved_model")
    before_moved, before_trained = _files(moved), _files(model)
    predictor = NnunetV1Model.from_folder(moved, ["1"]).load(torch.device("cpu"))
    assert predictor.num_classes == 2
    assert _files(moved) == before_moved  # no fold_0 folder, no log file
    assert _files(model) == before_trained  # nothing at the training-time folder that the .pkl records


def test_a_model_record_that_is_not_one_is_a_one_line_error(trained, tmp_path):
    import torch

    from reisoseg.errors import ReIsoSegError
    from reisoseg.nnunet_v1.block_predictor import NnunetV1Model

    env, root, model = trained
    broken = _copy_of_fold_1(model, tmp_path / "broken_model")
    Path(f"{checkpoint_file(broken / 'fold_1')}.pkl").write_bytes(pickle.dumps({"name": "ReIsoSegTrainer"}))
    with pytest.raises(ReIsoSegError, match="model.pkl: not an nnU-Net v1 model record"):
        NnunetV1Model.from_folder(broken, ["1"]).load(torch.device("cpu"))


@pytest.mark.parametrize("poisoned", POISONED_FILES)
def test_model_files_that_would_run_code_are_refused_by_predict(trained, poisoned):
    env, root, model = trained
    evil, marker = _poisoned_copy(model, root, poisoned, "EvilTrainer")
    images = Path(env["nnUNet_raw_data_base"]) / "nnUNet_raw_data" / TASK / "imagesTs"
    result = run_reisoseg(["predict", "-i", str(images), "-o", str(root / "evil_out"), "-t", "501",
                           "-tr", "EvilTrainer", "-f", "0", "--disable_tta"], {**env, **PERMISSIVE_TORCH})
    assert_one_line_error(result, "refusing to load")
    assert not marker.exists()


@pytest.mark.parametrize("poisoned", POISONED_FILES)
def test_model_files_that_would_run_code_are_refused_by_segment(trained, poisoned):
    from reisoseg.io.nifti import read_nifti
    from reisoseg.io.volume import write_volume

    env, root, model = trained
    evil, marker = _poisoned_copy(model, root, poisoned, "EvilSegmentTrainer")
    image, spacing = read_nifti(Path(env["nnUNet_raw_data_base"]) / "nnUNet_raw_data" / TASK / "imagesTs"
                                / "synth_005_0000.nii.gz")
    volume = root / "evil_segment_input.zarr"
    if not volume.exists():
        write_volume(volume, image, spacing)
    output = root / f"evil_segment_{poisoned.replace('/', '_')}.zarr"
    result = run_reisoseg(["segment", "-i", str(volume), "-o", str(output), "--model_folder", str(evil), "-f", "0",
                           "--disable_tta", "--device", "cpu", "--no_progress"], {**env, **PERMISSIVE_TORCH})
    assert_one_line_error(result, "refusing to load")
    assert not marker.exists()


def test_a_checkpoint_that_would_run_code_is_refused_when_continuing(trained):
    env, root, model = trained
    fold = model / "fold_4"
    shutil.rmtree(fold, ignore_errors=True)
    shutil.copytree(model / "fold_0", fold)
    marker = root / "pwned_continue"
    try:
        checkpoint_file(fold).write_bytes(pickle.dumps({"epoch": TouchesMarker(marker)}))
        result = run_reisoseg(["train", "3d_fullres", "ReIsoSegTrainer", TASK, "4", "-c", "--device", "cpu",
                               "--disable_validation_inference"], {**env, **PERMISSIVE_TORCH})
        assert_one_line_error(result, "refusing to load a model file")
        assert not marker.exists()
    finally:
        shutil.rmtree(fold, ignore_errors=True)


def test_predict_em_formats_writes_input_format_with_spacing(trained):
    from reisoseg.io.nifti import read_nifti
    from reisoseg.io.volume import open_volume, write_volume

    env, root, model = trained
    image, spacing = read_nifti(Path(env["nnUNet_raw_data_base"]) / "nnUNet_raw_data" / TASK / "imagesTs"
                                / "synth_005_0000.nii.gz")
    em = root / "em_inputs"
    em.mkdir()
    write_volume(em / "stack.tif", image, spacing)
    write_volume(em / "volume.zarr", image, spacing)
    out = root / "em_outputs"
    result = run_reisoseg(["predict", "-i", str(em), "-o", str(out), "-t", "501", "-f", "0", "--disable_tta",
                           "--device", "cpu"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    labels = []
    for name in ("stack_segmentation.tif", "volume_segmentation.zarr"):
        segmentation = open_volume(out / name)
        assert segmentation.shape == image.shape and segmentation.spacing == pytest.approx(spacing)
        labels.append(segmentation.read())
    assert set(np.unique(labels[0])) == {0, 1}  # both classes: an all-background prediction fails here
    np.testing.assert_array_equal(labels[0], labels[1])  # the format changes nothing
    single = root / "single.h5"
    result = run_reisoseg(["predict", "-i", str(em / "stack.tif"), "-o", str(single), "-t", "501", "-f", "0",
                           "--disable_tta", "--device", "cpu", "--output_format", "hdf5"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(open_volume(f"{single}:/segmentation").read(), labels[0])
    missing = run_reisoseg(["predict", "-i", str(em / "absent.tif"), "-o", str(out), "-t", "501"], env)
    assert_one_line_error(missing, "absent.tif: no such file or folder")


def test_derived_plans_replan_generic_unet_for_the_new_patch(trained, monkeypatch):
    import math

    from reisoseg.nnunet_v1.plans import write_derived_plans

    env, root, model = trained
    monkeypatch.setenv("nnUNet_preprocessed", env["nnUNet_preprocessed"])
    path = write_derived_plans(TASK, "nnUNetPlans_small", patch_size=(8, 32, 32), batch_size=3)
    with open(path, "rb") as handle:
        stage = pickle.load(handle)["plans_per_stage"][0]
    assert list(stage["patch_size"]) == [8, 32, 32] and stage["batch_size"] == 3
    pooled = [math.prod(pool[axis] for pool in stage["pool_op_kernel_sizes"]) for axis in range(3)]
    assert all(p % f == 0 and p // f >= 4 for p, f in zip((8, 32, 32), pooled)), pooled  # fits, min edge 4
    assert len(stage["conv_kernel_sizes"]) == len(stage["pool_op_kernel_sizes"]) + 1


def test_train_with_a_patch_and_batch_of_our_choice_logs_the_plan(trained):
    env, root, model = trained
    result = run_reisoseg(["train", "3d_fullres", "ReIsoSegTrainer", TASK, "0", "--patch_size", "12", "32", "32",
                           "--batch_size", "3", "--epochs", "1", "--iterations_per_epoch", "2", "--device", "cpu",
                           "--disable_validation_inference"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    fold = fold_folder(model_folder(env["RESULTS_FOLDER"], TASK, plans="nnUNetPlansv2.1_patch12x32x32_batch3"), 0)
    assert checkpoint_file(fold).is_file()
    settings = json.loads((fold / "reisoseg.json").read_text())
    assert settings["patch_size"] == [12, 32, 32]
    assert "training patch [12, 32, 32], batch 3: about" in _log(fold)
