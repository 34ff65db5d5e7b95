"""`reisoseg export-bioimageio` on the tiny trained model: bioimageio.core's own test passes for every weight format
written (offline: nothing here reaches a URL; its file checks, sha256 included, stay on), the package describes the
planned spacing, and `-m model.zip` runs it back like the model folder, refusing tampered and poisoned packages."""
from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("bioimageio.core", reason="the bioimageio extra is not installed")

import reisoseg  # noqa: E402
from reisoseg.commands.main import main  # noqa: E402
from reisoseg.errors import ReIsoSegError  # noqa: E402
from reisoseg.io.nifti import read_nifti  # noqa: E402
from reisoseg.network import required_divisor  # noqa: E402
from reisoseg.safe_loading import safe_load_pickle  # noqa: E402
from tests.conftest import NNUNET_VARIABLES, TASK, TouchesMarker  # noqa: E402


@pytest.fixture(scope="module")
def package(trained, tmp_path_factory):
    env, root, model = trained
    output = tmp_path_factory.mktemp("bioimageio") / "model.zip"
    with pytest.MonkeyPatch.context() as patch:  # the model folder alone, as a lab that shares it has it
        for name in NNUNET_VARIABLES:
            patch.delenv(name, raising=False)
        assert main(["export-bioimageio", str(model), "-o", str(output), "-f", "0", "--authors", "Test Author"]) == 0
    return env, model, output


def test_bioimageio_core_runs_every_weight_format_of_the_package_offline(package):
    from bioimageio.core import test_model

    _, model, output = package
    for weight_format in ("torchscript", "pytorch_state_dict"):
        summary = test_model(str(output), weight_format=weight_format)
        failed = [(detail.name, [error.msg for error in detail.errors]) for detail in summary.details
                  if detail.status == "failed"]
        assert summary.status == "passed", (weight_format, failed)

    with zipfile.ZipFile(output) as archive:
        description = yaml.safe_load(archive.read("rdf.yaml"))
        assert {"cover.png", "README.md", "test_input.npy", "test_output.npy"} <= set(archive.namelist())
    assert description["format_version"] == "0.5.12"
    plans = safe_load_pickle(model / "plans.pkl")
    spacing = plans["plans_per_stage"][len(plans["plans_per_stage"]) - 1]["current_spacing"]
    axes = description["inputs"][0]["axes"][2:]
    assert [axis["scale"] for axis in axes] == pytest.approx(list(spacing))
    assert {axis["unit"] for axis in axes} == {"nanometer"}
    kwargs = description["weights"]["pytorch_state_dict"]["architecture"]["kwargs"]
    assert [axis["size"]["step"] for axis in axes] == list(required_divisor(kwargs["ani_scale"]))
    assert description["outputs"][0]["axes"][1]["channel_names"] == ["background", "mitochondria"]  # as recorded


def test_the_package_runs_back_like_the_model_folder(package):
    env, model, output = package
    image, spacing = read_nifti(os.path.join(env["nnUNet_raw_data_base"], "nnUNet_raw_data", TASK, "imagesTs",
                                             "synth_005_0000.nii.gz"))
    with pytest.MonkeyPatch.context() as patch:
        for name in NNUNET_VARIABLES:
            patch.setenv(name, env[name])
        folder_labels = reisoseg.segment(image, spacing, model=str(model), folds=["0"], tta=False, device="cpu",
                                         progress=False)
    package_labels = reisoseg.segment(image, spacing, model=str(output), tta=False, device="cpu", progress=False)
    assert 0 < folder_labels.mean() < 1
    assert (package_labels == folder_labels).mean() >= 0.999


def _rewritten(package: Path, target: Path, weights: bytes, *, describe_them: bool) -> Path:
    """`package` with other weights, its description's sha256 updated only if `describe_them` (as an attacker would)."""
    with zipfile.ZipFile(package) as source, zipfile.ZipFile(target, "w") as rewritten:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "reisoseg_state_dict.pt":
                data = weights
            elif item.filename == "rdf.yaml" and describe_them:
                description = yaml.safe_load(data)
                description["weights"]["pytorch_state_dict"]["sha256"] = hashlib.sha256(weights).hexdigest()
                data = yaml.safe_dump(description).encode()
            rewritten.writestr(item, data)
    return target


def test_tampered_poisoned_or_malformed_packages_are_refused_in_one_line(package, tmp_path):
    _, _, output = package
    marker = tmp_path / "pwned"
    poison = pickle.dumps(TouchesMarker(marker))
    image = np.random.default_rng(0).random((12, 32, 32), dtype=np.float32)
    not_a_zip = tmp_path / "model.zip"
    not_a_zip.write_bytes(b"not a zip")
    for model, message in ((_rewritten(output, tmp_path / "tampered.zip", poison, describe_them=False),
                            "do not match the sha256 its description gives"),
                           (_rewritten(output, tmp_path / "poisoned.zip", poison, describe_them=True),
                            "refusing to load a model file"),
                           (not_a_zip, "not a BioImage.IO package")):
        with pytest.raises(ReIsoSegError, match=message):
            reisoseg.segment(image, (40, 5, 5), model=str(model), device="cpu", progress=False)
    assert not marker.exists()


def test_only_reisoseg_models_are_exported(tmp_path, capsys):
    (tmp_path / "nnUNetTrainerV2__nnUNetPlansv2.1" / "fold_0").mkdir(parents=True)
    assert main(["export-bioimageio", str(tmp_path / "nnUNetTrainerV2__nnUNetPlansv2.1"), "-o",
                 str(tmp_path / "model.zip")]) == 1
    assert "only ReIsoSeg trainers' models can be exported" in capsys.readouterr().err
    assert not (tmp_path / "model.zip").exists()
