"""`reisoseg.nnunet_v2.training` and its training layer, in process: what it refuses before any work (no dataset
needed), and the time budget."""
from __future__ import annotations

import pytest

pytest.importorskip("nnunetv2", reason="the nnunetv2 extra is not installed")

import torch  # noqa: E402
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler  # noqa: E402

from reisoseg.errors import ReIsoSegError  # noqa: E402
from reisoseg.nnunet_v1.training_options import TrainingOptions  # noqa: E402
from reisoseg.nnunet_v2.em_training import V2TrainingMixin  # noqa: E402
from reisoseg.nnunet_v2.training import run_training  # noqa: E402


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    (tmp_path / "nnUNet_raw" / "Dataset601_Tiny").mkdir(parents=True)
    (tmp_path / "nnUNet_preprocessed" / "Dataset601_Tiny").mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize("options, trainer, message", [
    (TrainingOptions(time_budget_minutes=3, gpu_memory_gb=8), "ReIsoSegTrainer",
     "not on the nnU-Net v2 engine yet: `gpu_memory_gb`"),
    (TrainingOptions(em_augmentation=True), "nnUNetTrainer", "`em_augmentation`: not in v2's own nnUNetTrainer"),
    (TrainingOptions(time_budget_minutes=3), "nnUNetTrainer",
     "`time_budget_minutes`: not in v2's own nnUNetTrainer; train the baseline as nnUNetTrainerEM"),
    (TrainingOptions(optimizer="adamw"), "nnUNetTrainer", "`optimizer`: not in v2's own nnUNetTrainer"),
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


def test_v2_prediction_refuses_bad_input_and_what_v2_cannot_do_before_any_work(tmp_path, capsys):
    from reisoseg.commands.main import main

    volume = tmp_path / "stack.tif"
    volume.write_bytes(b"")
    assert main(["predict", "--engine", "v2", "-i", str(volume), "-o", str(tmp_path / "out"), "-t", "601"]) == 1
    assert f"{volume}: " in capsys.readouterr().err  # the empty file is named before any model is loaded
    assert main(["predict", "--engine", "v2", "-i", str(tmp_path), "-o", str(tmp_path / "out"), "-t", "601",
                 "--disable_mixed_precision"]) == 1
    assert "--disable_mixed_precision: not on the nnU-Net v2 engine" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


class _EpochsOnly(V2TrainingMixin):
    """The attributes of a v2 trainer that fitting epochs to a time budget reads and writes."""

    def __init__(self, epoch: int, budget_s: float):
        self.current_epoch, self._first_epoch, self.time_budget_s, self.num_epochs = epoch, 0, budget_s, 1000
        self.lr_scheduler = PolyLRScheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01), 0.01,
                                            self.num_epochs)
        self.logged = []

    def print_to_log_file(self, *args):
        self.logged.append(" ".join(str(a) for a in args))


def test_a_time_budget_refits_the_epochs_and_the_poly_schedule_follows():
    trainer = _EpochsOnly(epoch=1, budget_s=100)
    trainer._fit_epochs_to_budget(elapsed=20)  # two epochs in 20 s: 80 s left, room for 8 more
    assert trainer.num_epochs == 10 and trainer.lr_scheduler.max_steps == 10
    assert trainer.logged == ["time budget 100 s, 10.0 s per epoch: 10 epochs"]
    trainer.lr_scheduler.step(9)
    assert trainer.lr_scheduler.get_last_lr()[0] == pytest.approx(0.01 * (1 - 9 / 10) ** 0.9)
    trainer.current_epoch = 9
    trainer._fit_epochs_to_budget(elapsed=150)  # over the budget: this epoch is the last
    assert trainer.num_epochs == 10
