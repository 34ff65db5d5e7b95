"""The instance benchmark's bookkeeping: instance-target twins of the quality datasets and the summary tables."""
from __future__ import annotations

import pytest

from tests.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def instances():
    return load_benchmark("instances")


def _case(found: int, true: int, f1: float, errors: tuple[int, int, int, int] | None = None) -> dict:
    """A test volume's scores; `errors`: its false, missed, merged and split objects (older records lack them)."""
    counts = {} if errors is None else dict(zip(("false_objects", "missed_objects", "merges", "splits"), errors))
    return {"predicted_instances": found, "reference_instances": true, "f1_50": f1, "ap_50": f1, "ap_75": f1 / 2,
            "voi_split": 0.1, "voi_merge": 0.2, "ari": 0.9, "dice": 0.8, **counts}


def test_instance_twin_has_its_own_task_and_records():
    quality = load_benchmark("quality")
    semantic = quality.DATASETS["gerhard"]
    twin = semantic.with_instance_target()
    assert (twin.key, twin.task_id, twin.name, twin.instances) == ("gerhard_instances", 721,
                                                                   "QualityGerhardInstances", True)
    assert (twin.patch, semantic.instances) == (semantic.patch, False)
    assert quality.record_path(semantic, "auto", 0, 1000, 0.5).parent == quality.ENGINES["v1"].runs
    assert quality.record_path(semantic, "auto", 0, 1000, 0.5, quality.ENGINES["v2"]).parent.name == "quality_runs_v2"
    assert quality.record_path(twin, "auto", 0, 1000, 0.5) == (
        quality.INSTANCE_RUNS / "gerhard_instances_auto_seed0_it1000_step0.5.json")


def test_count_error_is_relative_to_the_true_count(instances):
    rows = instances._per_case_rows({"per_case": {"a": _case(6, 4, 0.5), "b": _case(2, 4, 0.5),
                                                  "c": _case(3, 0, 0.0)}})
    assert [rows[c]["count_error"] for c in "abc"] == [0.5, 0.5, 3.0]  # no true objects: error per false object


def test_summary_averages_over_seeds_and_volumes(instances):
    runs = [{"dataset": "synth8", "method": "ReIsoSegTrainer", "seed": seed,
             "pipelines": {"connected_components": instances._per_case_rows({"per_case": {"a": _case(10, 5, 0.2)}}),
                           "instances": instances._per_case_rows({"per_case": {"a": _case(5, 5, f1, (1, 1, 0, 0)),
                                                                               "b": _case(4, 5, f1, (0, 1, 1, 2))}})},
             "converged": {"connected_components": "yes (+0.001)", "instances": converged}}
            for seed, f1, converged in ((0, 0.6, "yes (-0.010)"), (1, 0.8, "not converged (-0.030)"))]
    cell = instances._summary(runs)["synth8"]["ReIsoSegTrainer"]
    assert cell["connected_components"]["volumes"] == 2 and cell["instances"]["volumes"] == 4
    assert cell["instances"]["f1_50"] == pytest.approx(0.7)
    assert cell["instances"]["objects_found"] == pytest.approx(4.5)
    assert cell["instances"]["count_error"] == pytest.approx(0.1)
    assert cell["connected_components"]["count_error"] == pytest.approx(1.0)
    lines = instances._tables(instances._summary(runs), 1000)
    assert lines[1] == "### synth8: 1000 iterations, seeds 0, 1"
    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip("|").split("|")]

    header = cells(next(line for line in lines if line.startswith("| method")))
    connected, decoded = (dict(zip(header, cells(line))) for line in lines[-2:])
    assert (decoded["method"], decoded["objects from"], decoded["found / true"]) == ("ReIsoSegTrainer",
                                                                                  "instance pipeline", "4.5 / 5.0")
    assert float(decoded["F1@0.5"]) == pytest.approx(0.7) and float(decoded["count error"]) == pytest.approx(0.1)
    assert decoded["false / missed / merged / split per volume"] == "0.5 / 1.0 / 0.5 / 1.0"
    assert connected["false / missed / merged / split per volume"] == "not recorded"
    assert decoded["model converged"] == "seed 0: yes (-0.010), seed 1: not converged (-0.030)"


def test_real_data_connected_components_come_from_the_semantic_record_without_a_model(instances, tmp_path,
                                                                                       monkeypatch):
    import argparse
    import json

    import numpy as np

    from reisoseg.io.nifti import write_nifti

    quality = instances.quality
    monkeypatch.setattr(quality.V1, "runs", tmp_path / "quality_runs")
    monkeypatch.setattr(quality, "INSTANCE_RUNS", tmp_path / "instance_runs")
    monkeypatch.setattr(quality, "raw_task_folder", lambda task: tmp_path / "raw" / task)
    for task in ("TaskS", "TaskI"):
        (tmp_path / "raw" / task / "labelsTs").mkdir(parents=True)
        write_nifti(tmp_path / "raw" / task / "labelsTs" / "case.nii.gz", np.ones((2, 3, 3), np.uint8), (50, 5, 5))
    dataset = quality.DATASETS["gerhard"]
    semantic_record = quality.record_path(dataset, "nnunet", 0, 1000, 0.5)
    semantic_record.parent.mkdir()
    final = {"metrics": {"f1_50": 0.25}, "per_case": {"case": _case(8, 4, 0.25)}}
    semantic_record.write_text(json.dumps({"snapshots": [], **final}))
    args = argparse.Namespace(iterations=1000, step_size=0.5, work=tmp_path / "no_models_here", device="cpu")
    scored = instances._connected_components(dataset, "TaskS", "TaskI", "nnunet", 0, args)
    assert scored == {"semantic_record": semantic_record.name, **final}
    cached = quality.INSTANCE_RUNS / "gerhard_nnunet_seed0_it1000_step0.5_connected_components.json"
    assert json.loads(cached.read_text()) == scored


def test_report_rows_hold_every_instance_run_with_the_pipelines_whose_records_exist(instances, tmp_path,
                                                                                      monkeypatch):
    import json

    quality = instances.quality
    monkeypatch.setattr(quality.V1, "runs", tmp_path / "quality_runs")
    monkeypatch.setattr(quality, "INSTANCE_RUNS", tmp_path / "instance_runs")
    quality.V1.runs.mkdir()
    quality.INSTANCE_RUNS.mkdir()

    def write(path, f1, change):
        path.write_text(json.dumps({"per_case": {"a": _case(4, 5, f1)}, "metrics": {"f1_50": f1},
                                    "convergence": {"converged": abs(change) < 0.02, "change": change}}))

    for dataset, method in (("synth8", "auto"), ("gerhard_p8", "nnunet")):
        semantic = quality.record_path(quality.DATASETS[dataset], method, 0, 1000, 0.5)
        twin = quality.record_path(quality.DATASETS[dataset].with_instance_target(), method, 0, 1000, 0.5)
        write(semantic, 0.1, 0.001)
        calibrated = {"calibrated": {"per_case": {"a": _case(5, 5, 0.9)}}} if dataset == "gerhard_p8" else {}
        twin.write_text(json.dumps({"method": method, "seed": 0, **json.loads(semantic.read_text()),
                                    "per_case": {"a": _case(5, 5, 0.8)}, **calibrated}))
        if dataset == "gerhard_p8":
            semantic.unlink()  # trained with --skip_connected_components: no semantic run
    write(quality.INSTANCE_RUNS / "synth8_auto_seed0_it1000_step0.5_connected_components.json", 0.1, 0.0)
    rows = {row["dataset"]: row for row in instances._rows_from_records(1000, 0.5)}
    assert set(rows) == {"synth8", "gerhard_p8"}
    synth, gerhard = rows["synth8"], rows["gerhard_p8"]
    assert list(synth["pipelines"]) == ["connected_components", "instances"]
    assert synth["pipelines"]["instances"]["a"]["f1_50"] == 0.8
    assert synth["pipelines"]["connected_components"]["a"]["f1_50"] == 0.1
    assert synth["converged"] == {"connected_components": "yes (+0.001)", "instances": "yes (+0.001)"}
    assert list(gerhard["pipelines"]) == ["instances", "calibrated"]
    assert gerhard["pipelines"]["calibrated"]["a"]["f1_50"] == 0.9 and gerhard["method"] == "nnU-Net baseline"


def test_validation_sections_leave_training_and_keep_their_objects_as_connected_components(tmp_path, monkeypatch):
    import numpy as np

    from reisoseg.io.nifti import read_nifti, write_nifti

    quality = load_benchmark("quality")
    dataset = quality.DATASETS["gerhard_p8"].with_instance_target()
    monkeypatch.setenv("nnUNet_raw_data_base", str(tmp_path))
    task = "Task723_Test"
    folder = quality.raw_task_folder(task)
    image = np.arange(10 * 6 * 6, dtype=np.uint8).reshape(10, 6, 6)
    objects = np.zeros_like(image, dtype=np.uint32)
    objects[2:8, 1:3, 1:3] = 7  # one object across the cut
    objects[7:9, 4:6, 4:6] = 9  # one only in the held-out sections
    for sub, name, array in (("imagesTr", "case_0000.nii.gz", image), ("labelsTr", "case.nii.gz", objects > 0),
                             ("instancesTr", "case.nii.gz", objects)):
        (folder / sub).mkdir(parents=True, exist_ok=True)
        write_nifti(folder / sub / name, array.astype(np.uint32 if sub == "instancesTr" else np.uint8), (50, 5, 5))
    dataset._hold_out_validation(task)
    assert read_nifti(folder / "imagesTr" / "case_0000.nii.gz")[0].shape == (6, 6, 6)
    assert read_nifti(folder / "instancesTr" / "case.nii.gz")[0].shape == (6, 6, 6)
    held_out, spacing = read_nifti(dataset.validation_folder(task) / "images" / "case_0000.nii.gz")
    assert np.array_equal(held_out, image[6:]) and spacing == (50, 5, 5)
    references, _ = read_nifti(dataset.validation_folder(task) / "instances" / "case.nii.gz")
    assert references.shape == (4, 6, 6) and set(np.unique(references)) == {0, 1, 2}  # two objects, renumbered
