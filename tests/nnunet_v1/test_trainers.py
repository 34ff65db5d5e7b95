"""The trainers' own hooks, on plans made by hand (no planning, no data): pattern, patch, recorded settings, deep
supervision scales and the time budget; and task/fold resolution."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from reisoseg.errors import ReIsoSegError
from reisoseg.layout import TRAINER_SETTINGS_FILE, fold_folder, plans_file
from reisoseg.nnunet_v1.tasks import parse_fold, resolve_task


def _plans(spacing, patch) -> dict:
    stage = {"batch_size": 2, "num_pool_per_axis": [2, 4, 4], "patch_size": np.array(patch),
             "do_dummy_2D_data_aug": True, "pool_op_kernel_sizes": [[1, 2, 2]] * 4,
             "conv_kernel_sizes": [[1, 3, 3]] * 5, "current_spacing": np.array(spacing, float)}
    return {"plans_per_stage": {0: stage}, "dataset_properties": {"intensityproperties": None},
            "normalization_schemes": {0: "nonCT"}, "base_num_features": 32, "num_modalities": 1, "num_classes": 1,
            "all_classes": [1], "use_mask_for_norm": {0: False}, "keep_only_largest_region": None,
            "min_region_size_per_class": None, "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2]}


def _trainer(folder, spacing=(40.0, 5.0, 5.0), patch=(16, 64, 64), name="ReIsoSegTrainer"):
    from reisoseg.nnunet_v1.trainers import TRAINERS

    trainer = TRAINERS[name](str(folder / "plans.pkl"), 0, output_folder=str(folder), dataset_directory=str(folder),
                             stage=0, unpack_data=False)
    trainer.process_plans(_plans(spacing, patch))  # the fold's own folder is folder/fold_0
    return trainer


@pytest.mark.parametrize("spacing, pattern", [((40, 5, 5), (2, 2, 2)), ((20, 5, 5), (1, 2, 2)),
                                              ((10, 5, 5), (1, 1, 2)), ((5, 5, 5), (1, 1, 1))])
def test_pattern_follows_the_planned_spacing(tmp_path, spacing, pattern):
    assert _trainer(tmp_path, spacing).pattern == pattern


def test_patch_is_rounded_down_to_what_the_pattern_divides(tmp_path):
    trainer = _trainer(tmp_path, patch=(13, 50, 70))  # (2, 2, 2) needs z % 2, y and x % 16
    assert list(trainer.patch_size) == [12, 48, 64]


def test_a_trained_fold_keeps_the_pattern_it_recorded(tmp_path):
    record = {"trainer": "ReIsoSegTrainer", "ani_scale": [1, 2, 2], "planned_spacing": [40.0, 5.0, 5.0]}
    fold_folder(tmp_path, 0).mkdir()
    (fold_folder(tmp_path, 0) / TRAINER_SETTINGS_FILE).write_text(json.dumps(record))
    assert _trainer(tmp_path).pattern == (1, 2, 2)  # not the (2, 2, 2) today's rule picks
    assert _trainer(tmp_path, spacing=(40, 4, 4)).pattern == (2, 2, 2)  # other plans: the record does not apply
    assert _trainer(tmp_path, name="ReIsoSegRMA8V6Trainer").pattern == (2, 2, 2)  # a fixed pattern stays fixed


@pytest.mark.parametrize("name", ["ReIsoSegRMA1V6Trainer", "ReIsoSegRMA2V6Trainer", "ReIsoSegRMA4V6Trainer",
                                  "ReIsoSegRMA8V6Trainer"])
def test_downsampled_targets_have_each_heads_shape(tmp_path, name):
    """nnU-Net's deep-supervision targets, made with the trainer's scales, fit the network's six heads."""
    import torch
    from nnunet.training.data_augmentation.downsampling import DownsampleSegForDSTransform2

    trainer = _trainer(tmp_path, name=name)
    trainer.setup_DA_params()
    trainer.device = torch.device("cpu")
    trainer.initialize_network()
    patch = tuple(int(v) for v in trainer.patch_size)
    with torch.no_grad():
        heads = trainer.network(torch.zeros(1, 1, *patch))
    targets = DownsampleSegForDSTransform2(trainer.deep_supervision_scales, 0, input_key="target",
                                           output_key="target")(target=np.zeros((1, 1, *patch)))["target"]
    assert len(heads) == len(targets) == 6
    assert [tuple(t.shape[2:]) for t in targets] == [tuple(h.shape[2:]) for h in heads]


@pytest.mark.parametrize("name", ["ReIsoSegTrainer", "nnUNetTrainerV2EM"])  # the method and the baseline alike
def test_time_budget_refits_the_remaining_epochs(tmp_path, name):
    trainer = _trainer(tmp_path, name=name)
    trainer.time_budget_s, trainer._epoch_cap, trainer.max_num_epochs = 100.0, 50, 50
    trainer.epoch = 1  # two epochs done in 20 s: 10 s each, 80 s left
    trainer._fit_epochs_to_budget(20.0)
    assert trainer.max_num_epochs == 10
    trainer._epoch_cap = 6
    trainer._fit_epochs_to_budget(20.0)
    assert trainer.max_num_epochs == 6  # never more than asked for
    trainer._fit_epochs_to_budget(150.0)  # over budget: stop after this epoch
    assert trainer.max_num_epochs == 2
    trainer._epoch_cap, trainer._first_epoch, trainer.epoch = 50, 10, 11  # continued (-c) at epoch 10
    trainer._fit_epochs_to_budget(20.0)  # two epochs of this run in 20 s: 10 s each, 80 s left
    assert trainer.max_num_epochs == 20


@pytest.fixture
def task_folders(tmp_path, monkeypatch):
    for name in ("Task501_Mito", "Task502_Mito", "Task503_Synapse"):
        (tmp_path / "raw" / "nnUNet_raw_data" / name).mkdir(parents=True)
    monkeypatch.setenv("nnUNet_raw_data_base", str(tmp_path / "raw"))
    for name in ("nnUNet_preprocessed", "RESULTS_FOLDER"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("given, found", [("503", "Task503_Synapse"), (503, "Task503_Synapse"),
                                          ("Synapse", "Task503_Synapse"), ("Task501_Mito", "Task501_Mito")])
def test_task_by_number_name_or_full_name(task_folders, given, found):
    assert resolve_task(given) == found


@pytest.mark.parametrize("given, fragment", [("Mito", "ambiguous: Task501_Mito, Task502_Mito"),
                                             ("504", "unknown task '504'"), ("Task501_Other", "unknown task")])
def test_task_errors_name_the_candidates(task_folders, given, fragment):
    with pytest.raises(ReIsoSegError, match=fragment):
        resolve_task(given)


def test_folds():
    assert [parse_fold(f) for f in ("all", "0", 3, "12")] == ["all", 0, 3, 12]
    for bad in ("-1", "fold_0", "x"):
        with pytest.raises(ReIsoSegError, match="unknown fold"):
            parse_fold(bad)


def test_derived_plans_keep_the_patch_asked_for_or_refuse_it(tmp_path, monkeypatch):
    import pickle

    from reisoseg.nnunet_v1.plans import write_derived_plans

    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path))
    source = plans_file(tmp_path, "Task501_X")
    source.parent.mkdir()
    source.write_bytes(pickle.dumps(_plans((40.0, 5.0, 5.0), (16, 64, 64))))
    written = write_derived_plans("Task501_X", "small", patch_size=(16, 80, 80), batch_size=3)
    stage = pickle.loads(written.read_bytes())["plans_per_stage"][0]
    assert list(stage["patch_size"]) == [16, 80, 80] and stage["batch_size"] == 3
    with pytest.raises(ReIsoSegError, match=r"`patch_size` \[16, 60, 60\]: nnU-Net's planner needs \[16, 64, 64\]"):
        write_derived_plans("Task501_X", "odd", patch_size=(16, 60, 60), batch_size=2)
    assert not plans_file(tmp_path, "Task501_X", "odd").exists()


def test_training_fits_the_patch_to_a_memory_budget_and_logs_it(tmp_path):
    from reisoseg.network.memory import training_step_memory

    trainer = _trainer(tmp_path)
    trainer._training, trainer.memory_budget_bytes = True, training_step_memory((16, 64, 64), 2, (2, 2, 2)).total / 2
    trainer.process_plans(_plans((40.0, 5.0, 5.0), (16, 64, 64)))
    patch = [int(v) for v in trainer.patch_size]
    assert math.prod(patch) < 16 * 64 * 64 and training_step_memory(patch, 2, (2, 2, 2)).total <= \
        trainer.memory_budget_bytes
    log = "".join(p.read_text() for p in fold_folder(tmp_path, 0).glob("training_log_*.txt"))
    assert f"training patch {patch}, batch 2: about" in log and "GiB budget" in log


def test_patch_and_batch_options_train_on_plans_of_their_own():
    from reisoseg.nnunet_v1.training import TrainingOptions, effective_plans_identifier

    assert effective_plans_identifier(TrainingOptions()) == "nnUNetPlansv2.1"
    assert effective_plans_identifier(TrainingOptions(patch_size=(16, 64, 64), batch_size=2)) == \
        "nnUNetPlansv2.1_patch16x64x64_batch2"
    assert effective_plans_identifier(TrainingOptions(plans_identifier="P", batch_size=4)) == "P_batch4"
