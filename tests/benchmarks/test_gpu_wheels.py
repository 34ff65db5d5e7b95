"""The GPU machine's wheels: what is carried, and LZMA-repacked wheels that hold the same files."""
from __future__ import annotations

import zipfile

from tests.benchmarks import load_benchmark


def test_carried_is_what_the_gpu_image_lacks_of_our_requirements():
    wheels = load_benchmark("gpu_wheels")
    carried = wheels.carried()
    assert {"nnunet", "simpleitk", "batchgenerators", "edt", "connected-components-3d", "zarr", "dask"} <= set(carried)
    assert not set(carried) & (wheels.DEVICE_IMAGE | wheels.NOT_IMPORTED | {"reisoseg"})
    assert carried["nnunet"] == "1.7.1"  # the version installed here, the one the tests ran with


def test_a_recompressed_wheel_holds_the_same_members_compressed_by_lzma(tmp_path):
    wheels = load_benchmark("gpu_wheels")
    source = tmp_path / "demo-1.0-py3-none-any.whl"
    members = {"demo/__init__.py": b"VALUE = 1\n" * 500, "demo-1.0.dist-info/RECORD": b"demo/__init__.py,,\n"}
    with zipfile.ZipFile(source, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    (tmp_path / "out").mkdir()
    packed = wheels.recompressed(source, tmp_path / "out")
    assert packed.name == source.name
    with zipfile.ZipFile(packed) as archive:
        assert {info.filename: archive.read(info) for info in archive.infolist()} == members
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_LZMA}


def test_the_image_requirements_are_what_a_rehearsal_installs_in_place_of_the_gpu_image():
    wheels = load_benchmark("gpu_wheels")
    image = dict(requirement.split("==") for requirement in wheels.image_requirements())
    assert {"numpy", "scipy", "scikit-image"} <= set(image) <= wheels.DEVICE_IMAGE
    assert "torch" not in image and not set(image) & set(wheels.carried())


def test_what_travels_is_tracked_and_untracked_files_but_not_ignored_or_deleted_ones(tmp_path):
    import subprocess

    wheels = load_benchmark("gpu_wheels")
    files = {".gitignore": ".venv/\n", "kept.py": "", "gone.py": "", "new.py": "", ".venv/lib.py": ""}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", ".gitignore", "kept.py", "gone.py"], cwd=tmp_path, check=True)
    (tmp_path / "gone.py").unlink()
    assert sorted(wheels.travelling_files(tmp_path)) == [".gitignore", "kept.py", "new.py"]
    assert wheels.working_tree_bytes(tmp_path) == len(".venv/\n")
