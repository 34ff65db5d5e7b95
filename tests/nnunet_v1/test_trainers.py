"""The trainers' own hooks, on plans made by hand (no planning, no data): pattern, patch, recorded settings, deep
supervision scales and the time budget; and task/fold resolution."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reisoseg.errors import ReIsoSegError
from reisoseg.layout import TRAINER_SETTINGS_FILE, fold_folder, plans_file
from reisoseg.nnunet_v1.tasks import parse_fold, resolve_task

ROOT = Path(__file__).resolve().parents[2]


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


@pytest.mark.parametrize("name, pattern", [("ReIsoSegRMA1V6Trainer", (1, 1, 1)), ("ReIsoSegRMA2V6Trainer", (1, 1, 2)),
                                           ("ReIsoSegRMA4V6Trainer", (1, 2, 2)), ("ReIsoSegRMA8V6Trainer", (2, 2, 2))])
def test_fixed_pattern_trainers_keep_their_pattern_whatever_the_spacing(tmp_path, name, pattern):
    for spacing in ((40.0, 5.0, 5.0), (5.0, 5.0, 5.0)):
        trainer = _trainer(tmp_path / str(spacing[0]), spacing, name=name)
        trainer.device = torch.device("cpu")
        trainer.initialize_network()
        assert trainer.pattern == pattern and trainer.network.net.ani_scale == pattern


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


@pytest.mark.parametrize("name", ["ReIsoSegTrainer", "nnUNetTrainerV2EM"])  # each with its own network's estimate
def test_training_fits_the_patch_to_a_memory_budget_and_logs_it(tmp_path, name):
    trainer = _trainer(tmp_path, name=name)
    planned = trainer.estimate_step_memory((16, 64, 64))
    trainer._training, trainer.memory_budget_bytes = True, planned.total / 2
    trainer.setup_DA_params()
    patch = tuple(int(v) for v in trainer.patch_size)
    assert math.prod(patch) < 16 * 64 * 64 and trainer.estimate_step_memory(patch).total <= planned.total / 2
    assert all(size % divisor == 0 for size, divisor in zip(patch, trainer.patch_divisor()))
    assert list(trainer.basic_generator_patch_size)[0] == patch[0]  # nnU-Net sized its augmentation for the fit
    log = "".join(p.read_text() for p in fold_folder(tmp_path, 0).glob("training_log_*.txt"))
    assert f"training patch {list(patch)}, batch 2: about" in log and "GiB budget" in log


def test_the_baselines_estimate_sees_nnunets_generic_unet(tmp_path):
    from nnunet.training.network_training.nnUNetTrainerV2 import nnUNetTrainerV2

    from reisoseg.nnunet_v1.network import baseline_network

    trainer = _trainer(tmp_path, name="nnUNetTrainerV2EM")
    nnUNetTrainerV2.initialize_network(trainer)
    built = {name: value.shape for name, value in trainer.network.state_dict().items()}
    assert built == {name: value.shape for name, value in baseline_network(trainer).state_dict().items()}


BASELINE_STEP = """
import json, sys, tempfile, torch
from pathlib import Path
from reisoseg.nnunet_v1.network import baseline_network
from tests.memory_probe import peak_bytes
from tests.nnunet_v1.test_trainers import _trainer
patch, batch = json.loads(sys.argv[1])
torch.set_num_threads(2)
trainer = _trainer(Path(tempfile.mkdtemp()), patch=patch, name="nnUNetTrainerV2EM")
trainer.batch_size = batch
network = baseline_network(trainer)
optimizer = torch.optim.SGD(network.parameters(), lr=0.01, momentum=0.99, nesterov=True)
image, target = torch.randn(batch, 1, *patch), (torch.rand(batch, 1, *patch) > 0.5).float()


def step():
    loss = sum(torch.nn.functional.cross_entropy(output, torch.nn.functional.interpolate(target, output.shape[2:])
                                                 .long()[:, 0]) for output in network(image))
    loss.backward()
    optimizer.step()


print(peak_bytes(step))
"""


@pytest.mark.slow  # ~15 s, like the second case of tests/network/test_memory.py; the suite's 15-minute budget
def test_the_baselines_estimate_is_within_a_quarter_of_a_measured_cpu_training_step(tmp_path):
    patch, batch = (16, 96, 96), 2
    result = subprocess.run([sys.executable, "-c", BASELINE_STEP, json.dumps([patch, batch])], capture_output=True,
                            text=True, timeout=600, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    measured = int(result.stdout.split()[-1])
    trainer = _trainer(tmp_path, patch=patch, name="nnUNetTrainerV2EM")
    estimated = trainer.estimate_step_memory(patch).total
    assert 0.75 <= estimated / measured <= 1.25, (estimated / 2**20, measured / 2**20)


def _step_inputs(trainer, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    patch = tuple(int(v) for v in trainer.patch_size)
    data = torch.randn(2, 1, *patch, generator=generator).numpy()
    labels = (torch.rand(2, 1, *patch, generator=generator) > 0.6).float().numpy()
    targets = [labels[:, :, :, ::step, ::step] for step in (1, 2, 4, 8, 16)]
    return {"data": data, "target": targets}


def test_the_baselines_step_is_nnunets(tmp_path):
    """The shared training step, run by the baseline, updates the weights exactly as nnUNetTrainerV2's own."""
    from nnunet.training.loss_functions.deep_supervision import MultipleOutputLoss2
    from nnunet.training.network_training.nnUNetTrainerV2 import nnUNetTrainerV2

    trainers = []
    for copy in ("ours", "nnunet"):
        trainer = _trainer(tmp_path / copy, name="nnUNetTrainerV2EM")
        trainer.device = torch.device("cpu")
        torch.manual_seed(0)
        trainer.initialize_network()
        trainer.initialize_optimizer_and_scheduler()
        trainer.loss = MultipleOutputLoss2(trainer.loss, [8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])
        trainers.append(trainer)
    ours, theirs = trainers
    batch = _step_inputs(ours)
    assert ours.run_iteration(iter([batch])) == pytest.approx(
        float(nnUNetTrainerV2.run_iteration(theirs, iter([batch]))), rel=1e-6)
    for (name, mine), (_, reference) in zip(ours.network.state_dict().items(), theirs.network.state_dict().items()):
        assert torch.allclose(mine, reference, atol=1e-6), name
    assert any(not torch.equal(a, b) for a, b in zip(ours.network.parameters(), _fresh_weights(tmp_path)))


def _fresh_weights(tmp_path):
    trainer = _trainer(tmp_path / "fresh", name="nnUNetTrainerV2EM")
    trainer.device = torch.device("cpu")
    torch.manual_seed(0)
    trainer.initialize_network()
    return list(trainer.network.parameters())


def test_cpu_bf16_runs_the_step_in_bfloat16_and_only_on_the_cpu(tmp_path, monkeypatch):
    """`cpu_bf16`: the convolutions of a training step compute in bfloat16, the weights stay float32 and learn;
    refused on another device and for nnU-Net's own trainers."""
    from nnunet.training.loss_functions.deep_supervision import MultipleOutputLoss2
    from nnunet.training.network_training.nnUNetTrainerV2 import nnUNetTrainerV2

    from reisoseg.devices import cpu_computes_bf16
    from reisoseg.nnunet_v1 import em_training
    from reisoseg.nnunet_v1.training import _configure
    from reisoseg.nnunet_v1.training_options import TrainingOptions

    dtypes = {}
    for bf16 in (False, True):
        trainer = _trainer(tmp_path / str(bf16), name="nnUNetTrainerV2EM")
        _configure(trainer, TrainingOptions(cpu_bf16=bf16), torch.device("cpu"))
        trainer.initialize_network()
        trainer.initialize_optimizer_and_scheduler()
        monkeypatch.setattr(nnUNetTrainerV2, "initialize", lambda *args, **kwargs: None)  # no data here
        trainer.initialize(training=True)  # our part of it: the log line
        log = Path(trainer.log_file).read_text() if trainer.log_file else ""
        assert ("bfloat16 autocast on the CPU" in log) == bf16
        assert ("lacks bfloat16 instructions" in log) == (bf16 and not cpu_computes_bf16())
        trainer.loss = MultipleOutputLoss2(trainer.loss, [8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])
        before = [p.detach().clone() for p in trainer.network.parameters()]
        first_conv = next(m for m in trainer.network.modules() if isinstance(m, torch.nn.Conv3d))
        first_conv.register_forward_hook(lambda module, inputs, output, key=bf16: dtypes.update({key: output.dtype}))
        assert np.isfinite(trainer.run_iteration(iter([_step_inputs(trainer)])))
        assert all(p.dtype == torch.float32 for p in trainer.network.parameters())
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.network.parameters()))
    assert dtypes == {False: torch.float32, True: torch.bfloat16}
    monkeypatch.setattr(em_training, "cpu_computes_bf16", lambda: False)  # a CPU that emulates bfloat16
    emulating = _trainer(tmp_path / "emulating", name="nnUNetTrainerV2EM")
    _configure(emulating, TrainingOptions(cpu_bf16=True), torch.device("cpu"))
    emulating.initialize(training=True)
    assert "lacks bfloat16 instructions: slower than float32 here" in Path(emulating.log_file).read_text()

    with pytest.raises(ReIsoSegError, match="for training on the CPU, not on cuda"):
        _configure(_trainer(tmp_path / "cuda"), TrainingOptions(cpu_bf16=True), torch.device("cuda"))
    theirs = nnUNetTrainerV2(str(tmp_path / "plans.pkl"), 0, output_folder=str(tmp_path),
                             dataset_directory=str(tmp_path), stage=0, unpack_data=False)
    with pytest.raises(ReIsoSegError, match="trains in float32 on the CPU"):
        _configure(theirs, TrainingOptions(cpu_bf16=True), torch.device("cpu"))


def test_patch_and_batch_options_train_on_plans_of_their_own():
    from reisoseg.nnunet_v1.training_options import TrainingOptions, effective_plans_identifier

    assert effective_plans_identifier(TrainingOptions()) == "nnUNetPlansv2.1"
    assert effective_plans_identifier(TrainingOptions(patch_size=(16, 64, 64), batch_size=2)) == \
        "nnUNetPlansv2.1_patch16x64x64_batch2"
    assert effective_plans_identifier(TrainingOptions(plans_identifier="P", batch_size=4)) == "P_batch4"
