"""`reisoseg.nnunet_v2.training`: what it refuses before any work, in process (no dataset needed)."""
from __future__ import annotations

import pytest

pytest.importorskip("nnunetv2", reason="the nnunetv2 extra is not installed")

from reisoseg.errors import ReIsoSegError  # noqa: E402
from reisoseg.nnunet_v1.training_options import TrainingOptions  # noqa: E402
from reisoseg.nnunet_v2.training import run_training  # noqa: E402


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    (tmp_path / "nnUNet_raw" / "Dataset601_Tiny").mkdir(parents=True)
    (tmp_path / "nnUNet_preprocessed" / "Dataset601_Tiny").mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize("options, trainer, message", [
    (TrainingOptions(time_budget_minutes=3, em_augmentation=True), "ReIsoSegTrainer",
     "not on the nnU-Net v2 engine yet: `time_budget_minutes`, `em_augmentation`"),
    (TrainingOptions(), "nnUNetTrainerV2", "unknown trainer 'nnUNetTrainerV2' on the v2 engine"),
    (TrainingOptions(ani_weight=0.3), "nnUNetTrainer", "`ani_weight` weighs ReIsoSeg's two branches"),
    (TrainingOptions(), "ReIsoSegTrainer", "nnUNetPlans.json: plans not found; run nnUNetv2_plan_and_preprocess"),
])
def test_what_v2_cannot_do_or_find_is_refused_before_any_work(dataset, options, trainer, message):
    with pytest.raises(ReIsoSegError, match=message.replace("(", r"\(")):
        run_training("3d_fullres", trainer, "601", "0", options)
    assert not (dataset / "nnUNet_results").exists()  # nothing written


def test_an_unknown_dataset_is_one_line(dataset):
    with pytest.raises(ReIsoSegError, match="^Could not find a dataset with the ID 699"):
        run_training("3d_fullres", "ReIsoSegTrainer", "699", "0")


def test_prediction_of_what_v2_cannot_predict_yet_is_refused_before_any_work(tmp_path, capsys):
    from reisoseg.commands.main import main

    volume = tmp_path / "stack.tif"
    volume.write_bytes(b"")
    assert main(["predict", "--engine", "v2", "-i", str(volume), "-o", str(tmp_path / "out"), "-t", "601"]) == 1
    assert "the v2 engine predicts nnU-Net case folders (CASE_0000.nii.gz) only so far" in capsys.readouterr().err
    assert main(["predict", "--engine", "v2", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "-t", "601",
                 "--instances", "--min_score", "0.5"]) == 1
    assert "not on the nnU-Net v2 engine yet: --instances, --min_score" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
