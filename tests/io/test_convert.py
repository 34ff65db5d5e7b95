"""`reisoseg convert` / `check`: a good conversion, and a corpus of bad inputs that must leave nothing behind."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tifffile

from reisoseg.commands.main import main
from reisoseg.io.nifti import read_nifti
from reisoseg.io.volume import write_volume

SPACING = (40.0, 5.0, 5.0)


def _image(shape=(6, 16, 16), seed=0):
    return (np.random.default_rng(seed).random(shape) * 200 + 10).astype(np.uint8)


def _labels(shape=(6, 16, 16)):
    labels = np.zeros(shape, np.uint8)
    labels[:, 4:10, 4:10] = 191
    labels[:, 0:2, 0:2] = 32
    return labels


def _run(capsys, *args) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def good(tmp_path):
    write_volume(tmp_path / "img.tif", _image(), SPACING)
    write_volume(tmp_path / "lab.tif", _labels(), SPACING)
    return tmp_path


def test_convert_splits_sections_maps_labels_and_keeps_spacing(good, capsys):
    raw = good / "raw"
    code, out, err = _run(capsys, "convert", "--image", str(good / "img.tif"), "--labels", str(good / "lab.tif"),
                          "--label-map", "mitochondria=191", "--task", "502", "--name", "Mito",
                          "--test-sections", "4-5", "--raw_data_base", str(raw))
    assert code == 0, err
    task = raw / "nnUNet_raw_data" / "Task502_Mito"
    dataset = json.loads((task / "dataset.json").read_text())
    assert dataset["labels"] == {"0": "background", "1": "mitochondria"} and dataset["numTraining"] == 1
    image, spacing = read_nifti(task / "imagesTr" / "vol00_traina_0000.nii.gz")
    labels, _ = read_nifti(task / "labelsTr" / "vol00_traina.nii.gz")
    assert image.shape == (4, 16, 16) and spacing == SPACING
    assert np.array_equal(image, _image()[:4]) and set(np.unique(labels)) == {0, 1}
    assert read_nifti(task / "imagesTs" / "vol00_test_0000.nii.gz")[0].shape == (2, 16, 16)
    code, out, err = _run(capsys, "check", str(task))
    assert code == 0 and out.startswith("ok:")


def test_convert_for_v2_writes_v2s_layout_with_its_ignore_label(good, capsys, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(good / "raw_v2"))
    code, out, err = _run(capsys, "convert", "--image", str(good / "img.tif"), "--labels", str(good / "lab.tif"),
                          "--label-map", "mitochondria=191", "--task", "502", "--name", "Mito", "--engine", "v2",
                          "--test-sections", "4-5", "--annotated-sections", "0,2,4,5")
    assert code == 0, err
    dataset_folder = good / "raw_v2" / "Dataset502_Mito"
    assert out.strip() == f"done: {dataset_folder}"
    dataset = json.loads((dataset_folder / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, "mitochondria": 1, "ignore": 2}  # v2's ignore: the highest
    assert dataset["channel_names"] == {"0": "EM"} and dataset["file_ending"] == ".nii.gz"
    assert dataset["numTraining"] == 1 and "training" not in dataset
    labels, spacing = read_nifti(dataset_folder / "labelsTr" / "vol00_traina.nii.gz")
    assert spacing == SPACING and set(np.unique(labels[1])) == {2} and set(np.unique(labels[0])) == {0, 1}
    assert (dataset_folder / "imagesTr" / "vol00_traina_0000.nii.gz").is_file()
    verify = pytest.importorskip("nnunetv2.experiment_planning.verify_dataset_integrity",
                                 reason="the nnunetv2 extra is not installed")
    verify.verify_dataset_integrity(str(dataset_folder), num_processes=1)  # v2's own check of its layout


def test_v2_needs_its_own_raw_folder(good, capsys, monkeypatch):
    monkeypatch.delenv("nnUNet_raw", raising=False)
    monkeypatch.setenv("nnUNet_raw_data_base", str(good / "raw_v1"))  # v1's folder is not v2's
    code, out, err = _run(capsys, "convert", "--image", str(good / "img.tif"), "--labels", str(good / "lab.tif"),
                          "--label-map", "mitochondria=191", "--task", "502", "--name", "Mito", "--engine", "v2")
    assert code == 1 and err.strip().endswith("no output location: pass --raw_data_base or set nnUNet_raw")
    assert not (good / "raw_v1").exists()


def test_z_axis_on_the_wrong_side_warns(good, capsys):
    write_volume(good / "wrong.tif", _image(), (5.0, 5.0, 40.0))
    write_volume(good / "wrong_lab.tif", _labels(), (5.0, 5.0, 40.0))
    code, out, err = _run(capsys, "convert", "--image", str(good / "wrong.tif"), "--labels",
                          str(good / "wrong_lab.tif"), "--label-map", "mito=191", "--task", "503", "--name", "W",
                          "--raw_data_base", str(good / "r"))
    assert code == 0 and "largest spacing (40.0 nm) is on axis x, not z" in err


def _h5(path, **datasets):
    with h5py.File(path, "w") as handle:
        for name, value in datasets.items():
            handle.create_dataset(name, data=value)
    return path


def _bad_cases(tmp):
    """(name, arguments, exact error fragment); files are made on the fly in `tmp`."""
    img, lab = str(tmp / "img.tif"), str(tmp / "lab.tif")
    sections = tmp / "sections"
    sections.mkdir()
    for z in range(6):
        tifffile.imwrite(sections / f"{z}.tif", _image()[z])
    colour = tmp / "colour"
    colour.mkdir()
    tifffile.imwrite(colour / "0.tif", np.random.default_rng(1).integers(0, 255, (8, 8, 3), np.uint8))
    uneven = tmp / "uneven"
    uneven.mkdir()
    tifffile.imwrite(uneven / "0.tif", np.ones((8, 8), np.uint8))
    tifffile.imwrite(uneven / "1.tif", np.ones((8, 9), np.uint8))
    nan = _image().astype(np.float32)
    nan[0, 0, 0] = np.nan
    inf = _image().astype(np.float32)
    inf[1, 1, 1] = np.inf
    write_volume(tmp / "nan.h5", nan, SPACING)
    write_volume(tmp / "inf.h5", inf, SPACING)
    write_volume(tmp / "nan.nii.gz", nan, SPACING)  # ITK < 6 alone would read the NaN as 0
    write_volume(tmp / "const.h5", np.full((6, 16, 16), 7, np.uint8), SPACING)
    write_volume(tmp / "small_lab.tif", _labels((6, 16, 12)), SPACING)
    write_volume(tmp / "other_spacing_lab.tif", _labels(), (50.0, 5.0, 5.0))
    write_volume(tmp / "two.tif", (_labels() > 0).astype(np.uint8) * 2, SPACING)
    write_volume(tmp / "frac.h5", _labels().astype(np.float32) + 0.5, SPACING)
    _h5(tmp / "empty.h5", data=np.zeros((0, 16, 16), np.uint8))
    _h5(tmp / "empty_lab.h5", data=np.zeros((0, 16, 16), np.uint8))
    _h5(tmp / "complex.h5", data=_image().astype(np.complex64))
    _h5(tmp / "flat.h5", data=_image()[0])
    _h5(tmp / "multi.h5", a=_image(), b=_image())
    (tmp / "corrupt.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    truncated = (tmp / "img.tif").read_bytes()
    (tmp / "truncated.tif").write_bytes(truncated[: len(truncated) // 3])
    (tmp / "notes.txt").write_text("x")
    import zarr

    zarr.open_group(str(tmp / "plain_group.zarr"), mode="w").create_array("x", shape=(2, 2, 2), dtype="u1")
    mito = ["--label-map", "mitochondria=191"]
    given = ["--spacing", *map(str, SPACING)]  # for files made without spacing metadata
    return [
        ("missing image", ["--image", str(tmp / "nope.tif"), "--labels", lab, *mito], "nope.tif: no such file"),
        ("missing labels", ["--image", img, "--labels", str(tmp / "gone.tif"), *mito], "gone.tif: no such file"),
        ("shape mismatch", ["--image", img, "--labels", str(tmp / "small_lab.tif"), *mito],
         "label shape (6, 16, 12) differs from image"),
        ("no spacing", ["--image", str(sections), "--labels", lab, *mito], "no spacing in the file"),
        ("non-positive spacing", ["--image", img, "--labels", lab, *mito, "--spacing", "0", "5", "5"],
         "--spacing must be three positive numbers"),
        ("contradicting spacing", ["--image", img, "--labels", lab, *mito, "--spacing", "50", "5", "5"],
         "contradicts the file's metadata"),
        ("label spacing differs", ["--image", img, "--labels", str(tmp / "other_spacing_lab.tif"), *mito],
         "differs from the image's"),
        ("undeclared labels", ["--image", img, "--labels", str(tmp / "two.tif"), "--classes", "mito"],
         "label values [2] are not declared"),
        ("non-integer labels", ["--image", img, "--labels", str(tmp / "frac.h5"), *mito],
         "label values must be whole numbers"),
        ("NaN", ["--image", str(tmp / "nan.h5"), "--labels", lab, *mito], "image contains NaN or Inf"),
        ("Inf", ["--image", str(tmp / "inf.h5"), "--labels", lab, *mito], "image contains NaN or Inf"),
        ("NaN in NIfTI", ["--image", str(tmp / "nan.nii.gz"), "--labels", lab, *mito], "image contains NaN or Inf"),
        ("constant image", ["--image", str(tmp / "const.h5"), "--labels", lab, *mito], "constant image"),
        ("empty volume", ["--image", str(tmp / "empty.h5"), "--labels", str(tmp / "empty_lab.h5"), *mito, *given],
         "empty volume"),
        ("unsupported dtype", ["--image", str(tmp / "complex.h5"), "--labels", lab, *mito, *given],
         "unsupported image dtype complex64"),
        ("2D input", ["--image", str(tmp / "flat.h5"), "--labels", lab, *mito], "expected a 3D (z, y, x) volume"),
        ("ambiguous hdf5", ["--image", str(tmp / "multi.h5"), "--labels", lab, *mito], "holds 2 datasets"),
        ("missing hdf5 dataset", ["--image", f"{tmp / 'multi.h5'}:/c", "--labels", lab, *mito], "no dataset '/c'"),
        ("corrupt hdf5", ["--image", str(tmp / "corrupt.h5"), "--labels", lab, *mito], "corrupt.h5: cannot read"),
        ("truncated tiff", ["--image", str(tmp / "truncated.tif"), "--labels", lab, *mito],
         "truncated.tif: truncated or corrupt"),
        ("unsupported format", ["--image", str(tmp / "notes.txt"), "--labels", lab, *mito], "unsupported format"),
        ("zarr group without OME", ["--image", str(tmp / "plain_group.zarr"), "--labels", lab, *mito],
         "zarr group without OME multiscales"),
        ("colour sections", ["--image", str(colour), "--labels", lab, *mito, "--spacing", *map(str, SPACING)],
         "colour image"),
        ("uneven sections", ["--image", str(uneven), "--labels", lab, *mito], "differs from 0.tif"),
        ("label map syntax", ["--image", img, "--labels", lab, "--label-map", "mito:191"],
         "expected NAME=VALUE"),
        ("test sections out of range", ["--image", img, "--labels", lab, *mito, "--test-sections", "4-9"],
         "beyond its 6 sections"),
        ("image/label count", ["--image", img, img, "--labels", lab, *mito], "give one label volume per image"),
        ("test volume index", ["--image", img, "--labels", lab, *mito, "--test-volumes", "3"],
         "--test-volumes [3]"),
        ("class that occurs nowhere", ["--image", img, "--labels", lab, "--label-map", "mitochondria=77"],
         "class 'mitochondria' (value 77) occurs in none of the label files"),
        ("one of two classes absent", ["--image", img, "--labels", lab, "--label-map", "mitochondria=191",
                                       "synapse=5,6"], "class 'synapse' (value 5,6) occurs in none"),
    ]


def test_bad_input_corpus(good, capsys):
    cases = _bad_cases(good)
    assert len(cases) >= 20
    before = {p: p.stat().st_mtime_ns for p in good.rglob("*") if p.is_file()}
    for name, arguments, fragment in cases:
        common = ["--task", "510", "--name", "Bad", "--raw_data_base", str(good / "raw")]
        code, out, err = _run(capsys, "convert", *arguments, *common)
        lines = [line for line in err.splitlines() if line.startswith("reisoseg: error:")]
        assert code == 1 and len(lines) == 1, (name, err)
        assert fragment in lines[0], (name, lines[0])
        raw = good / "raw" / "nnUNet_raw_data"
        assert not raw.exists() or not any(raw.iterdir()), (name, list(raw.iterdir()))
    assert {p: p.stat().st_mtime_ns for p in before} == before  # inputs untouched


def test_existing_task_is_not_replaced(good, capsys):
    arguments = ["convert", "--image", str(good / "img.tif"), "--labels", str(good / "lab.tif"), "--label-map",
                 "mitochondria=191", "--task", "505", "--name", "Keep", "--raw_data_base", str(good / "raw")]
    assert _run(capsys, *arguments)[0] == 0
    dataset = good / "raw" / "nnUNet_raw_data" / "Task505_Keep" / "dataset.json"
    before = dataset.read_text()
    code, out, err = _run(capsys, *arguments)
    assert code == 1 and "already exists" in err and dataset.read_text() == before


def test_check_reports_hand_made_problems(good, capsys):
    arguments = ["convert", "--image", str(good / "img.tif"), "--labels", str(good / "lab.tif"), "--label-map",
                 "mitochondria=191", "--task", "506", "--name", "Hand", "--raw_data_base", str(good / "raw")]
    assert _run(capsys, *arguments)[0] == 0
    task = good / "raw" / "nnUNet_raw_data" / "Task506_Hand"
    from reisoseg.io.nifti import write_nifti

    write_nifti(task / "labelsTr" / "vol00.nii.gz", np.full((6, 16, 16), 3, np.uint8), SPACING)
    code, out, err = _run(capsys, "check", str(task))
    assert code == 1 and "label values [3] are not declared" in err
    (task / "dataset.json").write_text("{")
    code, out, err = _run(capsys, "check", str(task))
    assert code == 1 and "not valid JSON" in err


def test_convert_instances_from_semantic_labels_warns_and_from_object_ids_keeps_them(tmp_path, capsys):
    image, labels = _image((8, 24, 24)), np.zeros((8, 24, 24), np.uint8)
    labels[:, 2:10, 2:10] = 191
    labels[:, 10:20, 2:10] = 191  # touching the first: one connected component
    write_volume(tmp_path / "img.tif", image, SPACING)
    write_volume(tmp_path / "lab.tif", labels, SPACING)
    code, _, err = _run(capsys, "convert", "--image", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "lab.tif"),
                        "--label-map", "mitochondria=191", "--instances", "mitochondria", "--task", "601", "--name",
                        "Objects", "--test-sections", "6-7", "--raw_data_base", str(tmp_path / "raw"))
    assert code == 0, err
    assert "no object ids" in err and "touching objects stay merged" in err and err.count("warning") == 1
    task = tmp_path / "raw" / "nnUNet_raw_data" / "Task601_Objects"
    dataset = json.loads((task / "dataset.json").read_text())
    assert dataset["labels"] == {"0": "background", "1": "mitochondria", "2": "mitochondria_boundary"}
    assert dataset["reisoseg_instances"]["instance_class"] == 1 and dataset["reisoseg_instances"]["boundary_class"] == 2
    trained, _ = read_nifti(task / "labelsTr" / "vol00_traina.nii.gz")
    assert set(np.unique(trained)) == {0, 1, 2}
    objects, _ = read_nifti(task / "instancesTs" / "vol00_test.nii.gz")
    assert objects.max() == 1  # merged: one component

    ids = np.zeros((8, 24, 24), np.uint16)
    ids[:, 2:10, 2:10], ids[:, 10:20, 2:10] = 17, 400
    write_volume(tmp_path / "ids.tif", ids, SPACING)
    code, _, err = _run(capsys, "convert", "--image", str(tmp_path / "img.tif"), "--labels", str(tmp_path / "ids.tif"),
                        "--classes", "mitochondria", "--instances", "mitochondria", "--instance-labels", "--task",
                        "602", "--name", "Ids", "--test-sections", "6-7", "--raw_data_base", str(tmp_path / "raw"))
    assert code == 0 and "warning" not in err, err
    task = tmp_path / "raw" / "nnUNet_raw_data" / "Task602_Ids"
    objects, _ = read_nifti(task / "instancesTs" / "vol00_test.nii.gz")
    assert set(np.unique(objects)) == {0, 17, 400}
    trained, _ = read_nifti(task / "labelsTr" / "vol00_traina.nii.gz")
    assert (trained[:, 9:11, 4] == 2).all()  # the contact between the two objects is boundary
