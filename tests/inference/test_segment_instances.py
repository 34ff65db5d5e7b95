"""`segment --instances` and `predict --instances` with a model trained on the instance target."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from reisoseg.evaluation.instances import adjusted_rand_index
from reisoseg.io.nifti import read_nifti, write_nifti
from reisoseg.io.volume import open_volume, write_volume
from reisoseg.synthetic import generate_volume
from tests.conftest import assert_one_line_error, kill_after_first_marker, run_reisoseg

SHAPE = (20, 64, 60)
BLOCK = ["--block", "10", "32", "60"]  # 2 x 2 x 1 blocks meeting at z 10 and y 32 (x whole: the suite's time)
OPTIONS = ["-t", "503", "-f", "0", "--disable_tta", "--device", "cpu", "--no_progress", "--instances"]


@pytest.fixture(scope="module")
def case(trained_instances, tmp_path_factory):
    """A test volume and its objects decoded whole by `predict --instances` (nnU-Net's in-memory prediction)."""
    env, model = trained_instances
    folder = tmp_path_factory.mktemp("instances")
    volume = generate_volume(SHAPE, 8, seed=22)
    write_volume(folder / "raw.zarr", volume.image, volume.spacing)
    (folder / "cases").mkdir()
    write_nifti(folder / "cases" / "case_0000.nii.gz", volume.image, volume.spacing)
    result = run_reisoseg(["predict", "-i", str(folder / "cases"), "-o", str(folder / "predicted"), "-t", "503",
                           "-f", "0", "--disable_tta", "--device", "cpu", "--instances"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    objects, spacing = read_nifti(folder / "predicted" / "instances" / "case.nii.gz")
    assert spacing == pytest.approx(volume.spacing)
    return env, folder, volume, objects


def test_predict_instances_writes_objects_scores_and_folded_semantic_labels(case):
    env, folder, volume, objects = case
    semantic, _ = read_nifti(folder / "predicted" / "case.nii.gz")
    scores = json.loads((folder / "predicted" / "instances" / "case.scores.json").read_text())
    assert objects.dtype == np.uint32 and set(np.unique(semantic)) <= {0, 1}  # boundary folded into the class
    assert ((objects > 0) <= (semantic > 0)).all()
    assert sorted(map(int, scores)) == list(range(1, int(objects.max()) + 1))
    assert not (folder / "predicted" / "case.npz").exists()  # the softmax was only needed for decoding


def test_blockwise_objects_equal_whole_volume_objects_and_ids_are_unique(case):
    """The halo reaches across the whole volume: the barely trained model's landscape is float16 plateaus over
    most of the volume, where flooding order carries further than any halo (CI once measured ARI 0.95 with the
    default halo). With full context the passes reproduce the whole-volume objects (here exactly: 1409 of 1409
    matched one to one); whether the default halo suffices on a trained landscape is tested in test_instances.py."""
    env, folder, volume, whole = case
    out = folder / "blocks.zarr"
    result = run_reisoseg(["segment", "-i", str(folder / "raw.zarr"), "-o", str(out), *OPTIONS, *BLOCK,
                           "--instance_halo", *BLOCK[1:]], env)
    assert result.returncode == 0, result.stderr[-3000:]
    labels = open_volume(out).read()
    assert labels.dtype == np.uint32 and labels.shape == SHAPE
    count = int(whole.max())
    assert count >= 3, count  # not a comparison of empty volumes
    assert int(labels.max()) == count and np.unique(labels).size == count + 1  # ids 1..N, none lost
    assert adjusted_rand_index(whole, labels) >= 0.99  # 1.0 here: the probabilities are bit-equal, so exact
    group = zarr.open_group(str(out), mode="r")
    assert "image-label" in group.attrs and sorted(map(int, group.attrs["reisoseg"]["scores"])) == \
        list(range(1, count + 1))
    semantic = group["semantic"][:]
    assert set(np.unique(semantic)) <= {0, 1} and ((labels > 0) <= (semantic > 0)).all()
    assert "seeds" not in group and "objects" not in group and "probabilities" not in group


@pytest.mark.slow  # two more subprocess runs; CI covers resuming every instance pass in test_instances.py
def test_killed_instance_run_resumes_to_the_same_objects(case):
    env, folder, volume, whole = case
    uninterrupted = folder / "uninterrupted.zarr"
    assert run_reisoseg(["segment", "-i", str(folder / "raw.zarr"), "-o", str(uninterrupted), *OPTIONS, *BLOCK],
                        env).returncode == 0
    out = folder / "resumed.zarr"
    command = ["segment", "-i", str(folder / "raw.zarr"), "-o", str(out), *OPTIONS, *BLOCK]
    done_before = kill_after_first_marker(command, env, folder / "resumed.zarr.partial" / ".blocks", 4)
    assert not out.exists()
    result = run_reisoseg(["segment", "-i", str(folder / "raw.zarr"), "-o", str(out), *OPTIONS, *BLOCK], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipping {done_before} of 4 finished blocks" in result.stderr
    np.testing.assert_array_equal(open_volume(out).read(), open_volume(uninterrupted).read())


def test_a_semantic_model_refuses_instances_in_one_line(trained, tmp_path):
    env, root, model = trained
    volume = generate_volume((12, 48, 48), 8, seed=1)
    write_volume(tmp_path / "raw.zarr", volume.image, volume.spacing)
    result = run_reisoseg(["segment", "-i", str(tmp_path / "raw.zarr"), "-o", str(tmp_path / "out.zarr"), "-t", "501",
                           "-f", "0", "--device", "cpu", "--instances"], env)
    assert_one_line_error(result, "without an instance target")
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "out.zarr.partial").exists()
    result = run_reisoseg(["predict", "-i", str(tmp_path / "raw.zarr"), "-o", str(tmp_path / "p.zarr"), "-t", "501",
                           "-f", "0", "--device", "cpu", "--instances"], env)
    assert_one_line_error(result, "without an instance target")


def test_predict_instances_writes_objects_in_every_em_format(case):
    """TIFF holds no uint32 in ImageJ's format: objects come back identical from TIFF and OME-Zarr (HDF5 and NIfTI
    write through the same `write_volume`; the semantic EM-formats test covers their reading and writing)."""
    env, folder, volume, whole = case
    inputs = folder / "em_formats"
    inputs.mkdir()
    for name in ("stack.tif", "volume.zarr"):
        write_volume(inputs / name, volume.image, volume.spacing)
    out = folder / "em_formats_out"
    result = run_reisoseg(["predict", "-i", str(inputs), "-o", str(out), *OPTIONS], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert int(whole.max()) >= 3  # not a comparison of empty volumes
    for name in ("stack_segmentation_instances.tif", "volume_segmentation_instances.zarr"):
        objects = open_volume(out / name)
        assert objects.spacing == pytest.approx(volume.spacing), name
        np.testing.assert_array_equal(objects.read(), whole, err_msg=name)


def _copy_of_the_model(trained_instances, root):
    """The instance model in a results folder of its own (calibration rewrites its instances.json)."""
    import shutil

    env, model = trained_instances
    shutil.copytree(env["RESULTS_FOLDER"], root / "results")
    return {**env, "RESULTS_FOLDER": str(root / "results")}, root / "results" / model.relative_to(
        env["RESULTS_FOLDER"])


def _calibrate_in_process(arguments, env, patch) -> list[str]:
    """Run `reisoseg calibrate-instances` here and return every volume it opened."""
    from reisoseg.commands.main import main
    from reisoseg.inference import calibration

    opened = []

    def spy(path, *args, **kwargs):
        opened.append(str(path))
        return open_volume(path, *args, **kwargs)

    patch.setattr(calibration, "open_volume", spy)
    for name, value in env.items():
        patch.setenv(name, value)
    assert main(["calibrate-instances", *arguments, "--device", "cpu"]) == 0
    return opened


@pytest.fixture(scope="module")
def calibrated(trained_instances, tmp_path_factory):
    """A copy of the instance model calibrated by `calibrate-instances` on one validation volume of our own, with
    the paths that calibration opened: (env, model, root, opened)."""
    root = tmp_path_factory.mktemp("calibrated")
    env, copy = _copy_of_the_model(trained_instances, root)
    for sub in ("images", "references"):
        (root / sub).mkdir()
    volume = generate_volume((12, 48, 48), 8, seed=40)
    write_volume(root / "images" / "val.tif", volume.image, volume.spacing)
    write_volume(root / "references" / "val.tif", np.where(volume.labels == 1, volume.instances, 0), volume.spacing)
    with pytest.MonkeyPatch.context() as patch:
        opened = _calibrate_in_process([str(copy), "--images", str(root / "images"), "--references",
                                        str(root / "references")], env, patch)
    return env, copy, root, opened


def test_calibration_reads_only_the_validation_volumes_and_stores_its_choice(calibrated):
    env, model, root, opened = calibrated
    assert sorted(opened) == [str(root / "images" / "val.tif"), str(root / "references" / "val.tif")]
    stored = json.loads((model / "instances.json").read_text())
    record = stored["calibration"]
    assert record["validation_cases"] == ["val"] and record["grid_points"] == 7 * 6 * 6  # min volume 0: one
    assert {k: stored[k] for k in record["chosen"]} == record["chosen"]
    assert record["after"]["ap_75"] >= record["before"]["ap_75"]
    assert stored["uncalibrated"]["seed_threshold"] == 0.4  # the fixture's loosened settings


def test_by_default_each_fold_calibrates_on_its_validation_cases_and_never_opens_a_test_case(trained_instances,
                                                                                          tmp_path, monkeypatch):
    from reisoseg.safe_loading import safe_load_pickle

    env, copy = _copy_of_the_model(trained_instances, tmp_path)
    opened = _calibrate_in_process([str(copy)], env, monkeypatch)
    task = copy.parent.name
    splits = safe_load_pickle(Path(env["nnUNet_preprocessed"]) / task / "splits_final.pkl")
    held_out = [str(c) for c in splits[0]["val"]]
    raw = Path(env["nnUNet_raw_data_base"]) / "nnUNet_raw_data" / task
    assert sorted(opened) == sorted([str(raw / "imagesTr" / f"{c}_0000.nii.gz") for c in held_out]
                                    + [str(raw / "instancesTr" / f"{c}.nii.gz") for c in held_out])
    assert json.loads((copy / "instances.json").read_text())["calibration"]["validation_cases"] == held_out


def test_predict_decodes_with_the_stored_settings_and_flags_override_them(calibrated, case):
    env, model, root, _ = calibrated
    _, folder, _, _ = case
    stored = json.loads((model / "instances.json").read_text())
    # a choice that drops every object, on the fixture's loosened settings (which decode objects: `case`)
    (model / "instances.json").write_text(json.dumps({**stored, **stored["uncalibrated"], "min_score": 1.01}))
    for flags, expect_objects in (([], False), (["--min_score", "0"], True)):
        out = root / f"predicted{len(flags)}"
        result = run_reisoseg(["predict", "-i", str(folder / "cases"), "-o", str(out), "-t", "503", "-f", "0",
                               "--disable_tta", "--device", "cpu", "--instances", *flags], env)
        assert result.returncode == 0, result.stderr[-3000:]
        objects, _ = read_nifti(out / "instances" / "case.nii.gz")
        assert (objects.max() > 0) == expect_objects


def test_a_model_trained_on_fold_all_keeps_its_decoding_and_says_so_in_one_line(calibrated, tmp_path):
    import shutil

    env, model, _, _ = calibrated
    only_all = tmp_path / model.name
    shutil.copytree(model, only_all)
    (only_all / "fold_0").rename(only_all / "all")
    before = (only_all / "instances.json").read_text()
    result = run_reisoseg(["calibrate-instances", str(only_all)], env)
    assert result.returncode == 0 and len(result.stdout.strip().splitlines()) == 1, result.stdout + result.stderr
    assert "fold all has no validation cases" in result.stdout and (only_all / "instances.json").read_text() == before
