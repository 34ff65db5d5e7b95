"""`reisoseg segment` and `reisoseg.segment` against nnU-Net's in-memory predictor, with a trained tiny model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import zarr

from reisoseg.commands.main import main
from reisoseg.io.nifti import read_nifti, write_nifti
from reisoseg.io.volume import open_volume, write_volume
from reisoseg.synthetic import generate_volume
from tests.conftest import NNUNET_VARIABLES, assert_one_line_error, kill_after_first_marker, run_reisoseg

SHAPE = (24, 80, 72)  # the model's patch is 12 x 48 x 48: 3 x 3 x 2 windows at step 0.5
BLOCK = ["--block", "16", "48", "56"]  # divides none of the axes: 2 x 2 x 2 blocks, the last ones cut short
NO_TTA = ["-t", "501", "-f", "0", "--disable_tta", "--device", "cpu", "--no_progress"]


def _in_memory(env: dict, image: np.ndarray, spacing, folder: Path, *extra: str) -> tuple[np.ndarray, np.ndarray]:
    """nnU-Net v1's own prediction (whole volume in memory) through `reisoseg predict`: labels and softmax."""
    (folder / "in").mkdir()
    write_nifti(folder / "in" / "case_0000.nii.gz", image, spacing)
    result = run_reisoseg(["predict", "-i", str(folder / "in"), "-o", str(folder / "out"), "-t", "501", "-f", "0",
                           "--device", "cpu", "-z", *extra], env)
    assert result.returncode == 0, result.stderr[-3000:]
    labels, _ = read_nifti(folder / "out" / "case.nii.gz")
    return labels, np.load(folder / "out" / "case.npz")["softmax"].astype(np.float32)


@pytest.fixture(scope="module")
def case(trained, tmp_path_factory):
    env, root, model = trained
    folder = tmp_path_factory.mktemp("blockwise")
    volume = generate_volume(SHAPE, 8, seed=21)
    write_volume(folder / "raw.zarr", volume.image, volume.spacing)
    labels, softmax = _in_memory(env, volume.image, volume.spacing, folder, "--disable_tta")
    return env, model, folder, volume, labels, softmax


def test_blockwise_equals_in_memory_prediction_for_uneven_blocks(case):
    env, model, folder, volume, reference, softmax = case
    out = folder / "seg.zarr"
    result = run_reisoseg(["segment", "-i", str(folder / "raw.zarr"), "-o", str(out), *NO_TTA, *BLOCK,
                           "--save_probabilities"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    segmentation = open_volume(out)
    assert segmentation.shape == SHAPE and segmentation.spacing == pytest.approx(volume.spacing)
    labels = segmentation.read()
    agreement = float((labels == reference).mean())
    assert agreement >= 0.999, agreement
    assert 0 < reference.mean() < 1  # the comparison is not between two empty (or full) volumes
    probabilities = zarr.open_group(str(out), mode="r")["probabilities"][:]
    np.testing.assert_allclose(probabilities.astype(np.float32), softmax, atol=2e-3)  # float16 on both sides
    group = zarr.open_group(str(out), mode="r")
    assert "image-label" in group.attrs and group.attrs["reisoseg"]["settings"]["block"] == [16, 48, 56]
    assert not (folder / "seg.zarr.partial").exists()


@pytest.mark.slow  # ~60 s; CI resumes a SIGKILLed run with the pure-torch model in test_model_seam.py
def test_killed_run_resumes_skipping_finished_blocks_with_identical_result(case):
    env, model, folder, volume, reference, _ = case
    out = folder / "resumed.zarr"
    command = ["segment", "-i", str(folder / "raw.zarr"), "-o", str(out), *NO_TTA, *BLOCK]
    done_before = kill_after_first_marker(command, env, folder / "resumed.zarr.partial" / ".blocks", 8)
    assert not out.exists()  # nothing under the final name until every block is written
    result = run_reisoseg(["segment", "-i", str(folder / "raw.zarr"), "-o", str(out), *NO_TTA, *BLOCK], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipping {done_before} of 8 finished blocks" in result.stderr
    uninterrupted = open_volume(folder / "seg.zarr").read()
    np.testing.assert_array_equal(open_volume(out).read(), uninterrupted)


@pytest.mark.slow  # a local Dask cluster, ~75 s: the suite's 15-minute budget
def test_dask_local_cluster_gives_the_same_result(case):
    from distributed import LocalCluster

    env, model, folder, volume, reference, _ = case
    out = folder / "cluster.zarr"
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster:
        result = run_reisoseg(["segment", "-i", str(folder / "raw.zarr"), "-o", str(out), *NO_TTA, *BLOCK,
                               "--dask-scheduler", cluster.scheduler_address], env)
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(open_volume(out).read(), open_volume(folder / "seg.zarr").read())


def test_python_api_numpy_in_numpy_out_with_one_block(case):
    import reisoseg

    env, model, folder, volume, reference, _ = case
    labels = reisoseg.segment(volume.image, spacing=volume.spacing, model=model, folds=["0"], tta=False,
                              device="cpu", progress=False)
    assert isinstance(labels, np.ndarray) and labels.shape == SHAPE and labels.dtype == np.uint8
    assert float((labels == reference).mean()) >= 0.999


@pytest.mark.slow  # 8x mirrored windows, ~40 s: the suite's 15-minute budget
def test_mirroring_matches_in_memory_on_a_small_volume(trained, tmp_path):
    import reisoseg

    env, root, model = trained
    volume = generate_volume((12, 48, 56), 8, seed=5)
    reference, _ = _in_memory(env, volume.image, volume.spacing, tmp_path)
    labels = reisoseg.segment(volume.image, spacing=volume.spacing, model=model, folds=["0"], tta=True,
                              device="cpu", progress=False, block=(12, 48, 32))
    assert float((labels == reference).mean()) >= 0.999


@pytest.mark.slow  # ~40 s; CI checks box-wise resampling against nnU-Net's in tests/nnunet_v1/test_resampling.py
def test_resampled_input_equals_in_memory_prediction_across_blocks(trained, tmp_path):
    """Data at 40 x 10 x 10 nm for a model planned at 40 x 5 x 5 nm: each block resamples the input its windows need,
    at the coordinates of nnU-Net's whole-volume resampling, and reads its core back as nnU-Net's export does.

    The only difference left is that nnU-Net normalises with statistics of the resampled volume, we with those of
    the input (0.2 % apart here).
    """
    env, root, model = trained
    volume = generate_volume((12, 96, 88), 8, seed=9)
    spacing = (40.0, 10.0, 10.0)
    reference, _ = _in_memory(env, volume.image, spacing, tmp_path, "--disable_tta", "--step_size", "1")
    write_volume(tmp_path / "coarse.zarr", volume.image, spacing)
    result = run_reisoseg(["segment", "-i", str(tmp_path / "coarse.zarr"), "-o", str(tmp_path / "seg.zarr"),
                           *NO_TTA, "--step_size", "1", "--block", "12", "32", "40"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    segmentation = open_volume(tmp_path / "seg.zarr")
    assert segmentation.shape == reference.shape == (12, 96, 88)
    assert segmentation.spacing == pytest.approx(spacing)
    agreement = float((segmentation.read() == reference).mean())
    assert agreement >= 0.999, agreement


def test_bad_inputs_give_one_line_errors_and_write_nothing(case, tmp_path, monkeypatch, capsys):
    env, model, folder, volume, reference, _ = case
    write_volume(tmp_path / "raw.h5:/raw", volume.image, volume.spacing)
    zarr.save_array(str(tmp_path / "nospacing.zarr"), volume.image)
    import tifffile

    tifffile.imwrite(tmp_path / "flat.tif", volume.image[0])
    import h5py

    with h5py.File(tmp_path / "plane.h5", "w") as handle:
        handle["raw"] = volume.image[0]
    out = tmp_path / "seg.zarr"
    for name in NNUNET_VARIABLES:  # in this process: one start-up for all the cases
        monkeypatch.setenv(name, env[name])
    cases = [
        ([f"{tmp_path / 'raw.h5'}:/missing"], "no dataset '/missing'"),
        ([str(tmp_path / "flat.tif"), "--spacing", "40", "5", "5"], "a single section (1, 80, 72) is a 2D image"),
        ([f"{tmp_path / 'plane.h5'}:/raw"], "expected a 3D (z, y, x) volume, got shape (80, 72)"),
        ([str(tmp_path / "nospacing.zarr")], "no spacing in the file; give --spacing"),
        ([str(tmp_path / "absent.zarr")], "absent.zarr: no such file or folder"),
    ]
    for arguments, fragment in cases:
        assert main(["segment", "-i", *arguments, "-o", str(out), *NO_TTA]) == 1
        errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("reisoseg: error:")]
        assert len(errors) == 1 and fragment in errors[0], errors
        assert not out.exists() and not (tmp_path / "seg.zarr.partial").exists()
    (tmp_path / "exists.zarr").mkdir()
    for output, fragment in ((tmp_path / "exists.zarr", "already exists (pass --overwrite"),
                             (tmp_path / "seg.tif", "name it *.zarr")):
        assert main(["segment", "-i", str(folder / "raw.zarr"), "-o", str(output), *NO_TTA]) == 1
        assert fragment in capsys.readouterr().err
    result = run_reisoseg(["segment", "-i", str(folder / "raw.zarr"), "-o", str(out), "--device", "cpu"], env)
    assert_one_line_error(result, "name the model")  # the command's own process: one line, no traceback
