import csv
import json
import math

import numpy as np
import pytest

from reisoseg.commands.main import main
from reisoseg.errors import ReIsoSegError
from reisoseg.evaluation.instances import connected_instances, instance_metrics
from reisoseg.evaluation.metrics import hausdorff_95
from reisoseg.evaluation.report import evaluate
from reisoseg.io.volume import write_volume

SPACING = (40.0, 5.0, 5.0)


def _cube(shape=(20, 40, 40), start=(5, 10, 10), size=10):
    mask = np.zeros(shape, np.uint8)
    mask[start[0]:start[0] + size, start[1]:start[1] + size, start[2]:start[2] + size] = 1
    return mask


def _sphere(center, radius, shape=(48, 48, 64)):
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return ((z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2 <= radius ** 2).astype(np.uint8)


def _pair(tmp_path, reference, prediction, spacing=SPACING):
    write_volume(tmp_path / "ref.nii.gz", reference, spacing)
    write_volume(tmp_path / "pred.nii.gz", prediction, spacing)
    return evaluate(tmp_path / "ref.nii.gz", tmp_path / "pred.nii.gz", classes={1: "mito"},
                    instance_classes=(1,))["mean"]["mito"]


def test_identical_and_disjoint(tmp_path):
    same = _pair(tmp_path, _cube(), _cube())
    assert same["dice"] == same["iou"] == same["f1_50"] == same["ap_75"] == 1.0 and same["hd95_nm"] == 0.0
    apart = _pair(tmp_path, _cube(), _cube(start=(5, 25, 25)))
    assert apart["dice"] == 0.0 and apart["f1_50"] == 0.0 and apart["hd95_nm"] > 0


def test_shifted_sphere_matches_analytic_lens_volume(tmp_path):
    radius, shift = 12, 6
    lens = math.pi * (4 * radius + shift) * (2 * radius - shift) ** 2 / 12
    expected = lens / (4 / 3 * math.pi * radius ** 3)  # Dice of two equal spheres
    result = _pair(tmp_path, _sphere((24, 24, 28), radius), _sphere((24, 24, 28 + shift), radius), (1.0, 1.0, 1.0))
    assert result["dice"] == pytest.approx(expected, abs=0.02)
    assert result["iou"] == pytest.approx(expected / (2 - expected), abs=0.02)  # ~0.46: below both thresholds
    assert result["f1_50"] == 0.0 and result["ap_75"] == 0.0


def test_hd95_uses_spacing():
    reference = _cube()
    assert hausdorff_95(reference, np.roll(reference, 1, axis=0), SPACING) == pytest.approx(40.0)
    assert hausdorff_95(reference, np.roll(reference, 1, axis=2), SPACING) == pytest.approx(5.0)


def test_touching_instances_merged_by_a_bridge_are_not_matched():
    reference = _cube(start=(5, 5, 5)) | _cube(start=(5, 5, 16))
    prediction = reference.copy()
    prediction[9, 9, 15] = 1  # one-voxel bridge joins the two cubes into one component
    metrics = instance_metrics(connected_instances(reference > 0), connected_instances(prediction > 0))
    assert metrics["reference_instances"] == 2 and metrics["predicted_instances"] == 1
    assert metrics["f1_50"] == 0.0 and metrics["ap_75"] == 0.0  # IoU 1000/2001 < 0.5


def test_empty_prediction_and_empty_reference(tmp_path):
    empty_pred = _pair(tmp_path, _cube(), np.zeros((20, 40, 40), np.uint8))
    assert empty_pred["dice"] == 0.0 and empty_pred["recall"] == 0.0 and empty_pred["f1_50"] == 0.0
    assert math.isnan(empty_pred["hd95_nm"])
    empty_ref = _pair(tmp_path, np.zeros((20, 40, 40), np.uint8), _cube())
    assert empty_ref["dice"] == 0.0 and empty_ref["precision"] == 0.0 and empty_ref["ap_75"] == 0.0


def test_shape_mismatch_is_an_error(tmp_path):
    write_volume(tmp_path / "ref.nii.gz", _cube(), SPACING)
    write_volume(tmp_path / "pred.nii.gz", _cube(shape=(20, 40, 41)), SPACING)
    with pytest.raises(ReIsoSegError, match="shape .* differs from reference"):
        evaluate(tmp_path / "ref.nii.gz", tmp_path / "pred.nii.gz")


@pytest.mark.parametrize("value", [np.nan, np.inf, 0.5])
def test_labels_that_are_not_whole_numbers_are_an_error_naming_the_file(tmp_path, capsys, value):
    prediction = _cube().astype(np.float32)
    prediction[0, 0, 0] = value
    write_volume(tmp_path / "ref.tif", _cube(), SPACING)
    write_volume(tmp_path / "pred.tif", prediction, SPACING)  # TIFF keeps NaN and Inf (NIfTI reads them as 0)
    assert main(["evaluate", "--ref", str(tmp_path / "ref.tif"), "--pred", str(tmp_path / "pred.tif")]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "pred.tif" in error and "whole numbers" in error


def test_whole_float_labels_are_read_and_classes_default_to_both_volumes(tmp_path):
    prediction = _cube().astype(np.float32)  # labels stored as floats, as NIfTI files often have them
    prediction[0, :4, :4] = 7  # a class the reference does not hold: all false positives, not left out
    write_volume(tmp_path / "ref.nii.gz", _cube(), SPACING)
    write_volume(tmp_path / "pred.nii.gz", prediction, SPACING)
    mean = evaluate(tmp_path / "ref.nii.gz", tmp_path / "pred.nii.gz")["mean"]
    assert sorted(mean) == ["class_1", "class_7"]
    assert mean["class_1"]["dice"] == 1.0 and mean["class_7"]["dice"] == 0.0 and mean["class_7"]["precision"] == 0.0


def test_command_on_folders_writes_table_json_and_csv(tmp_path, capsys):
    for folder in ("ref", "pred"):
        (tmp_path / folder).mkdir()
    for case, shift in (("a", 0), ("b", 2)):
        write_volume(tmp_path / "ref" / f"{case}.tif", _cube(), SPACING)
        write_volume(tmp_path / "pred" / f"{case}.tif", np.roll(_cube(), shift, axis=2), SPACING)
    code = main(["evaluate", "--ref", str(tmp_path / "ref"), "--pred", str(tmp_path / "pred"), "--classes",
                 "1=mitochondria", "--json", str(tmp_path / "m.json"), "--csv", str(tmp_path / "m.csv")])
    out = capsys.readouterr().out
    assert code == 0 and "mitochondria" in out and "hd95_nm" in out
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["per_case"]["a"]["mitochondria"]["dice"] == 1.0
    assert result["per_case"]["b"]["mitochondria"]["dice"] == pytest.approx(0.8)
    assert result["mean"]["mitochondria"]["dice"] == pytest.approx(0.9)
    rows = list(csv.DictReader((tmp_path / "m.csv").open()))
    assert [r["case"] for r in rows] == ["a", "b", "mean"] and float(rows[1]["hd95_nm"]) == pytest.approx(10.0)


def test_unannotated_voxels_count_in_no_metric(tmp_path, capsys):
    """Sparse labels: sections 12-19 were never annotated (value 2), and an object predicted there is not false."""
    reference, prediction = _cube(), _cube()
    reference[12:] = 2
    prediction[14:18, 25:35, 25:35] = 1  # a second object, in the unannotated sections only
    write_volume(tmp_path / "ref.nii.gz", reference, SPACING)
    write_volume(tmp_path / "pred.nii.gz", prediction, SPACING)
    as_background = evaluate(tmp_path / "ref.nii.gz", tmp_path / "pred.nii.gz", classes={1: "mito"},
                             instance_classes=(1,))["mean"]["mito"]
    assert as_background["precision"] == 0.5 and as_background["f1_50"] == pytest.approx(2 / 3)
    code = main(["evaluate", "--ref", str(tmp_path / "ref.nii.gz"), "--pred", str(tmp_path / "pred.nii.gz"),
                 "--ignore_label", "2", "--json", str(tmp_path / "m.json")])
    assert code == 0
    metrics = json.loads((tmp_path / "m.json").read_text())["mean"]
    assert list(metrics) == ["class_1"]  # the ignore value is no class
    assert metrics["class_1"]["dice"] == 1.0 and metrics["class_1"]["f1_50"] == 1.0
    assert metrics["class_1"]["predicted_instances"] == 1
