"""Sparse annotation: the loss over annotated voxels only (all six heads of ReIsoSeg's loss), the online pseudo-Dice,
patch sampling, the classes a model predicts, and `convert --annotated-sections/--ignore-value` with `check`."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunet.training.data_augmentation.downsampling import downsample_seg_for_ds_transform2
from nnunet.training.loss_functions.dice_loss import DC_and_CE_loss

from reisoseg.commands.main import main
from reisoseg.evaluation.report import evaluate
from reisoseg.io.nifti import read_nifti
from reisoseg.io.volume import write_volume
from reisoseg.loss import DS_WEIGHTS, ReIsoLoss
from reisoseg.nnunet_v1.sparse import (
    IGNORE_KEY,
    DiceCEWithIgnore,
    annotated_locations,
    output_classes,
    without_ignored,
)

IGNORE = 2


def _dice_ce(batch_dice=True):
    return DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": False}, {})  # nnU-Net's trainer's


@pytest.mark.parametrize("batch_dice", [True, False])
def test_with_nothing_ignored_it_is_nnunets_loss(batch_dice):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 2, 4, 8, 8, generator=generator, dtype=torch.float64)
    target = torch.randint(0, 2, (2, 1, 4, 8, 8), generator=generator).double()
    expected = _dice_ce(batch_dice)(logits, target.clone())
    assert torch.allclose(DiceCEWithIgnore(_dice_ce(batch_dice), IGNORE)(logits, target), expected, atol=1e-12)


def _heads_and_targets(labels: np.ndarray, generator: torch.Generator):
    """Six heads' logits (full, full, half in-plane) and nnU-Net's downsampled targets of `labels` (b, 1, z, y, x)."""
    scales = [[1, 1, 1], [1, 1, 1], [1, 0.5, 0.5]] * 2
    targets = [torch.from_numpy(t).double() for t in downsample_seg_for_ds_transform2(labels, scales)]
    logits = [torch.randn(2, 2, *t.shape[2:], generator=generator, dtype=torch.float64, requires_grad=True)
              for t in targets]
    return logits, targets


def test_ignored_voxels_change_neither_loss_nor_gradients_on_any_head():
    generator = torch.Generator().manual_seed(1)
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, (2, 1, 4, 8, 8)).astype(float)
    unannotated = np.zeros_like(truth, bool)
    unannotated[:, :, 1::2] = True  # every other section, as `convert --annotated-sections 0,2` makes
    loss = ReIsoLoss(DiceCEWithIgnore(_dice_ce(), IGNORE), DS_WEIGHTS)

    results = []
    for other_truth in (truth, np.where(unannotated, 1 - truth, truth)):  # what lies under the mask changes
        labels = np.where(unannotated, IGNORE, other_truth)
        logits, targets = _heads_and_targets(labels, torch.Generator().manual_seed(2))
        assert all((t == IGNORE).any() for t in targets)  # downsampling keeps the ignore label on every head
        value = loss(logits, targets)
        value.backward()
        results.append((value.detach(), [head.grad.clone() for head in logits]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(a, b) for a, b in zip(results[0][1], results[1][1]))

    labels = np.where(unannotated, IGNORE, truth)
    logits, targets = _heads_and_targets(labels, generator)
    loss(logits, targets).backward()
    for head, target in zip(logits, targets):  # the logits of ignored voxels get no gradient at all
        assert torch.count_nonzero(head.grad * (target == IGNORE)) == 0


def test_a_batch_with_nothing_annotated_gives_zero_loss_and_finite_gradients():
    logits = torch.randn(2, 2, 4, 8, 8, requires_grad=True)
    value = DiceCEWithIgnore(_dice_ce(), IGNORE)(logits, torch.full((2, 1, 4, 8, 8), float(IGNORE)))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(logits.grad).all() and not logits.grad.any()


def test_the_pseudo_dice_leaves_ignored_voxels_out():
    logits = torch.randn(1, 2, 4, 8, 8)
    target = torch.randint(0, 2, (1, 1, 4, 8, 8)).float()
    target[:, :, 2:] = IGNORE
    masked_logits, masked_target = without_ignored(logits, target, IGNORE)
    predicted, truth = masked_logits.argmax(1)[:, None], masked_target
    annotated = target != IGNORE
    assert not (predicted.bool() & ~annotated).any() and not (truth.bool() & ~annotated).any()
    assert torch.equal(predicted[annotated], logits.argmax(1)[:, None][annotated])
    assert torch.equal(truth[annotated], target[annotated])


def test_sampling_locations_are_annotated_voxels():
    segmentation = np.full((6, 10, 10), IGNORE, np.int8)
    segmentation[2] = 0
    segmentation[4, :5] = 1
    segmentation[4, 5:] = -1  # outside the image (nnU-Net's crop)
    found = annotated_locations(segmentation, IGNORE, count=80)
    assert found.shape == (80, 3)
    values = segmentation[tuple(found.T)]
    assert set(np.unique(values)) == {0, 1} and set(found[:, 0]) == {2, 4}
    assert annotated_locations(np.full((2, 3, 3), IGNORE), IGNORE).shape == (0, 3)


def test_fold_validation_scores_annotated_voxels_only(tmp_path):
    import nnunet.postprocessing.connected_components as v1_postprocessing
    import nnunet.training.network_training.nnUNetTrainer as v1_trainer

    from reisoseg.io.nifti import write_nifti
    from reisoseg.nnunet_v1.compat import scoring_annotated_voxels

    reference = np.zeros((4, 8, 8), np.uint8)
    reference[2:] = IGNORE  # sections 2 and 3 unlabelled
    reference[:2, 2:5, 2:5] = 1
    prediction = np.zeros_like(reference)
    prediction[:2, 2:5, 2:5] = 1
    prediction[2:, 5:7, 5:7] = 1  # an object in the unlabelled sections: neither right nor wrong
    pairs = [(str(tmp_path / "pred.nii.gz"), str(tmp_path / "ref.nii.gz"))]
    write_nifti(pairs[0][0], prediction, (40.0, 5.0, 5.0))
    write_nifti(pairs[0][1], reference, (40.0, 5.0, 5.0))

    def dice(aggregate):
        return aggregate(pairs, labels=[0, 1], num_threads=1)["mean"]["1"]["Dice"]

    plain = dice(v1_trainer.aggregate_scores)
    with scoring_annotated_voxels(IGNORE):
        assert dice(v1_trainer.aggregate_scores) == dice(v1_postprocessing.aggregate_scores) == 1.0
    assert plain == pytest.approx(2 * 18 / (2 * 18 + 8))  # the 8 voxels counted as false positives
    assert dice(v1_trainer.aggregate_scores) == dice(v1_postprocessing.aggregate_scores) == plain  # restored


def test_a_model_predicts_its_classes_without_the_ignore_label():
    assert output_classes({"num_classes": 2, IGNORE_KEY: 2}) == 2
    assert output_classes({"num_classes": 2}) == 3


def _convert(tmp_path, capsys, *extra, labels=None):
    image = (np.random.default_rng(0).random((6, 16, 16)) * 200 + 10).astype(np.uint8)
    if labels is None:
        labels = np.zeros((6, 16, 16), np.uint8)
        labels[:, 4:10, 4:10] = 191
    write_volume(tmp_path / "img.tif", image, (40.0, 5.0, 5.0))
    write_volume(tmp_path / "lab.tif", labels, (40.0, 5.0, 5.0))
    code = main(["convert", "--image", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lab.tif"),
                 "--label-map", "mitochondria=191", "--task", "505", "--name", "Sparse", "--raw_data_base",
                 str(tmp_path / "raw"), *extra])
    captured = capsys.readouterr()
    return code, captured, tmp_path / "raw" / "nnUNet_raw_data" / "Task505_Sparse"


def test_convert_annotated_sections_writes_ignore_everywhere_else(tmp_path, capsys):
    code, captured, task = _convert(tmp_path, capsys, "--annotated-sections", "0,2-3,5", "--test-sections", "5")
    assert code == 0, captured.err
    assert json.loads((task / "dataset.json").read_text())["labels"] == {
        "0": "background", "1": "mitochondria", "2": "ignore"}
    labels, _ = read_nifti(task / "labelsTr" / "vol00_traina.nii.gz")  # sections 0-4
    assert [set(np.unique(section)) for section in labels] == [{0, 1}, {2}, {0, 1}, {0, 1}, {2}]
    assert set(np.unique(read_nifti(task / "labelsTs" / "vol00_test.nii.gz")[0])) == {0, 1}
    assert main(["check", str(task)]) == 0
    assert "60.0% of the training voxels annotated" in capsys.readouterr().out


def test_convert_ignore_value_marks_unlabelled_voxels(tmp_path, capsys):
    labels = np.zeros((6, 16, 16), np.uint8)
    labels[:, 4:10, 4:10] = 191
    labels[:3, 12:] = 255
    code, captured, task = _convert(tmp_path, capsys, "--ignore-value", "255", labels=labels)
    assert code == 0, captured.err
    written, _ = read_nifti(task / "labelsTr" / "vol00.nii.gz")
    assert np.array_equal(written == 2, labels == 255) and np.array_equal(written == 1, labels == 191)


@pytest.mark.parametrize("extra, fragment", [
    (("--annotated-sections", "0-2", "--test-sections", "4-5"), "test cases must be fully annotated"),
    (("--annotated-sections", "0,9"), "`--annotated-sections` [9] beyond its 6 sections"),
    (("--annotated-sections", "3-1"), "--annotated-sections '3-1': expected sections and ranges"),
    (("--ignore-value", "191"), "`--ignore-value` 191 is also the value of a class"),
])
def test_convert_sparse_errors_name_the_problem_and_write_nothing(tmp_path, capsys, extra, fragment):
    code, captured, task = _convert(tmp_path, capsys, *extra)
    assert code == 1 and fragment.replace("`", "") in captured.err.replace("`", "") and not task.exists()


@pytest.fixture(scope="module")
def sparse_task(trained):
    """Task 506: the tiny task of `trained` with its odd sections unannotated, planned by nnU-Net v1."""
    import shutil

    from reisoseg.io.nifti import write_nifti
    from tests.conftest import TASK, plan_and_preprocess

    env, root, _ = trained
    raw = Path(env["nnUNet_raw_data_base"]) / "nnUNet_raw_data"
    task = raw / "Task506_TinySparse"
    shutil.rmtree(task, ignore_errors=True)
    shutil.copytree(raw / TASK, task)
    for path in (task / "labelsTr").glob("*.nii.gz"):
        labels, spacing = read_nifti(path)
        labels[1::2] = IGNORE
        write_nifti(path, labels, spacing)
    dataset = json.loads((task / "dataset.json").read_text())
    dataset["labels"][str(IGNORE)] = "ignore"
    (task / "dataset.json").write_text(json.dumps(dataset))
    plan_and_preprocess(506, env)
    return env, root, task


@pytest.mark.parametrize("trainer", ["ReIsoSegTrainer", pytest.param("nnUNetTrainerV2EM", marks=pytest.mark.slow)])
def test_sparse_training_predicts_the_real_classes(sparse_task, trainer):
    from reisoseg.layout import fold_folder, model_folder
    from reisoseg.nnunet_v1.block_predictor import NnunetV1Model
    from tests.conftest import run_reisoseg

    env, root, task = sparse_task
    result = run_reisoseg(["check", str(task)], env)
    assert result.returncode == 0 and "50.0% of the training voxels annotated" in result.stdout, result.stderr
    result = run_reisoseg(["train", "3d_fullres", trainer, "506", "0", "--epochs", "1", "--iterations_per_epoch", "3",
                           "--device", "cpu", "--em_augmentation"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    model = model_folder(env["RESULTS_FOLDER"], task.name, trainer)
    log = "".join(p.read_text() for p in fold_folder(model, 0).glob("training_log_*.txt"))
    # half the sections are labelled, less the few voxels of them that nnU-Net marks as outside the image (-1)
    fraction = re.search(r"sparse labels: ([\d.]+)% of the training voxels annotated", log)
    assert fraction and 45 < float(fraction.group(1)) <= 50 and "EM defect augmentation" in log
    assert NnunetV1Model.from_folder(model, folds=["0"]).num_classes == 2  # background and the one real class
    # the fold validation scores annotated voxels only, as `reisoseg evaluate --ignore_label` does
    validation = fold_folder(model, 0) / "validation_raw"
    summary = json.loads((validation / "summary.json").read_text())["results"]
    assert sorted(summary["mean"]) == ["0", "1"] and summary["all"]
    for case in summary["all"]:
        ours = evaluate(case["reference"], case["test"], classes={1: "mitochondria"}, ignore_label=IGNORE)
        assert case["1"]["Dice"] == pytest.approx(ours["mean"]["mitochondria"]["dice"], abs=1e-6, nan_ok=True)
    out = root / f"sparse_predictions_{trainer}"
    result = run_reisoseg(["predict", "-i", str(task / "imagesTs"), "-o", str(out), "-t", "506", "-tr", trainer,
                           "-f", "0", "--disable_tta", "--device", "cpu"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    predicted = [read_nifti(path)[0] for path in out.glob("*.nii.gz")]
    assert predicted and all(set(np.unique(p)) <= {0, 1} for p in predicted)
