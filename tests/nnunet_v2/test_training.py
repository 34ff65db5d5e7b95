"""`reisoseg.nnunet_v2.training` and its training layer, in process: what it refuses before any work (no dataset
needed), and the time budget."""
from __future__ import annotations

import re

import pytest

pytest.importorskip("nnunetv2", reason="the nnunetv2 extra is not installed")

import torch  # noqa: E402
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler  # noqa: E402

from reisoseg.errors import ReIsoSegError  # noqa: E402
from reisoseg.network.memory import training_step_memory  # noqa: E402
from reisoseg.nnunet_v1.training_options import TrainingOptions  # noqa: E402
from reisoseg.nnunet_v2.em_training import V2TrainingMixin  # noqa: E402
from reisoseg.nnunet_v2.trainers import ReIsoSegTrainer  # noqa: E402
from reisoseg.nnunet_v2.training import run_training  # noqa: E402


@pytest.fixture
def dataset(tmp_path, monkeypatch):
    for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(name, str(tmp_path / name))
    (tmp_path / "nnUNet_raw" / "Dataset601_Tiny").mkdir(parents=True)
    (tmp_path / "nnUNet_preprocessed" / "Dataset601_Tiny").mkdir(parents=True)
    return tmp_path


@pytest.mark.parametrize("options, trainer, message", [
    (TrainingOptions(time_budget_minutes=3, fp32=True), "ReIsoSegTrainer",
     "not on the nnU-Net v2 engine yet: `fp32`"),
    (TrainingOptions(gpu_memory_gb=8), "nnUNetTrainerEM",
     "`gpu_memory_gb` fits ReIsoSeg's patch; nnUNetTrainerEM keeps the patch v2 planned (plan it with "
     "nnUNetv2_plan_and_preprocess -gpu_memory_target)"),
    (TrainingOptions(em_augmentation=True), "nnUNetTrainer", "`em_augmentation`: not in v2's own nnUNetTrainer"),
    (TrainingOptions(time_budget_minutes=3), "nnUNetTrainer",
     "`time_budget_minutes`: not in v2's own nnUNetTrainer; train the baseline as nnUNetTrainerEM"),
    (TrainingOptions(optimizer="adamw"), "nnUNetTrainer", "`optimizer`: not in v2's own nnUNetTrainer"),
    (TrainingOptions(), "nnUNetTrainerV2", "unknown trainer 'nnUNetTrainerV2' on the v2 engine"),
    (TrainingOptions(ani_weight=0.3), "nnUNetTrainer", "`ani_weight` weighs ReIsoSeg's two branches"),
    (TrainingOptions(), "ReIsoSegTrainer", "nnUNetPlans.json: plans not found; run nnUNetv2_plan_and_preprocess"),
])
def test_what_v2_cannot_do_or_find_is_refused_before_any_work(dataset, options, trainer, message):
    with pytest.raises(ReIsoSegError, match=re.escape(message)):
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


class _V2EpochEnd:
    """What v2's `on_epoch_end` does that the snapshots depend on: it counts the epoch as done."""

    def on_epoch_end(self):
        self.current_epoch += 1


class _SavesOnly(V2TrainingMixin, _V2EpochEnd):
    def __init__(self, num_epochs: int, every: int):
        self.current_epoch, self.num_epochs, self.snapshot_every_epochs = 0, num_epochs, every
        self.time_budget_s, self.checkpoint_minutes, self._last_save = None, 1e9, 0.0
        self.output_folder, self.saved = "fold_0", []

    def save_checkpoint(self, filename: str) -> None:
        self.saved.append((filename, self.current_epoch + 1))  # v2 stores the epoch to resume at


def test_snapshots_are_kept_every_n_epochs_with_the_epoch_they_resume_at_and_none_at_the_end():
    trainer = _SavesOnly(num_epochs=7, every=3)
    for _ in range(7):
        trainer.on_epoch_end()
    assert trainer.saved == [("fold_0/checkpoint_ep_003.pth", 3), ("fold_0/checkpoint_ep_006.pth", 6)]
    assert trainer.current_epoch == 7  # restored after each save


def _plans(patch, spacing=(40.0, 5.0, 5.0), batch_size=2) -> dict:
    return {"configurations": {"3d_fullres": {"patch_size": list(patch), "spacing": list(spacing),
                                              "batch_size": batch_size}}}


def test_a_memory_budget_shrinks_the_patch_along_its_largest_physical_extent_until_a_step_fits():
    planned = _plans((16, 160, 160))
    full = training_step_memory((16, 160, 160), 2, (2, 2, 2), num_classes=3)
    fitted, estimate = ReIsoSegTrainer.fitted_to_memory(planned, "3d_fullres", 0.75 * full.total, 3, False)
    patch = fitted["configurations"]["3d_fullres"]["patch_size"]
    assert patch == [16, 128, 144]  # 640 nm of sections against 800 nm in-plane: y and x shrink by 16 in turn
    assert estimate.total <= 0.75 * full.total
    assert estimate == training_step_memory(tuple(patch), 2, (2, 2, 2), num_classes=3)
    assert planned["configurations"]["3d_fullres"]["patch_size"] == [16, 160, 160]  # the caller's plans untouched
    roomy, _ = ReIsoSegTrainer.fitted_to_memory(planned, "3d_fullres", 2 * full.total, 3, False)
    assert roomy == planned


def test_a_budget_no_patch_fits_is_one_line_naming_the_trainer_and_batch():
    with pytest.raises(ReIsoSegError, match=r"^ReIsoSegTrainer at batch 2: no patch fits 0.00 GiB"):
        ReIsoSegTrainer.fitted_to_memory(_plans((16, 128, 128)), "3d_fullres", 1e6, 3, False)
