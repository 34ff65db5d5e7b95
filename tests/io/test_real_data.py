"""Convert the two real stacks in ../shared/data into tasks that nnU-Net v1 verifies (skipped without the data)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from reisoseg.io.nifti import read_nifti
from tests.conftest import nnunet_environment, plan_and_preprocess, run_reisoseg

pytestmark = [pytest.mark.real_data,
              pytest.mark.slow]  # ~25 s each: 1024 x 1024 stacks through nnU-Net's own verification


def _verify(env, task_id):
    return plan_and_preprocess(task_id, env, verify_only=True)


def test_gerhard_mitochondria_task_verifies(shared_data, tmp_path):
    stack = shared_data / "gerhard2013_L3vnc_sstem" / "stack1"
    env = nnunet_environment(tmp_path)
    result = run_reisoseg(["convert", "--image", str(stack / "raw"), "--labels", str(stack / "labels"),
                           "--spacing", "50", "4.6", "4.6", "--label-map", "mitochondria=191", "--task", "502",
                           "--name", "GerhardMito", "--test-sections", "16-19"], env)
    assert result.returncode == 0, result.stderr
    task = tmp_path / "raw" / "nnUNet_raw_data" / "Task502_GerhardMito"
    image, spacing = read_nifti(task / "imagesTr" / "vol00_traina_0000.nii.gz")
    labels, _ = read_nifti(task / "labelsTr" / "vol00_traina.nii.gz")
    assert image.shape == labels.shape == (16, 1024, 1024) and spacing == pytest.approx((50.0, 4.6, 4.6))
    assert 0.03 < (labels == 1).mean() < 0.08  # README: mitochondria 5.4 % of voxels
    assert read_nifti(task / "labelsTs" / "vol00_test.nii.gz")[0].shape == (4, 1024, 1024)
    _verify(env, 502)


def test_cdeep3m_training_and_validation_folders_verify(shared_data, tmp_path):
    root = shared_data / "cdeep3m_mito_sbem"
    env = nnunet_environment(tmp_path)
    result = run_reisoseg(["convert", "--image", str(root / "training" / "images"), str(root / "validation" / "images"),
                           "--labels", str(root / "training" / "labels"), str(root / "validation" / "labels"),
                           "--spacing", "40", "5.9", "5.9", "--classes", "mitochondria", "--test-volumes", "1",
                           "--task", "503", "--name", "CDeep3MMito"], env)
    assert result.returncode == 0, result.stderr
    task = tmp_path / "raw" / "nnUNet_raw_data" / "Task503_CDeep3MMito"
    dataset = json.loads((task / "dataset.json").read_text())
    assert dataset["numTraining"] == 1 and dataset["numTest"] == 1
    labels, spacing = read_nifti(task / "labelsTr" / "vol00.nii.gz")
    assert labels.shape == (20, 1024, 1024) and spacing == pytest.approx((40.0, 5.9, 5.9))
    assert set(np.unique(labels)) == {0, 1} and 0.06 < labels.mean() < 0.12  # README: 8.8 %
    _verify(env, 503)
