"""The wheels a lent GPU machine needs to run ReIsoSeg, prepared here and checked to fit what travels there.

The GPU machine has Python 3.12, its own CUDA torch and many scientific packages, no package registry, and takes at
most 64 MiB of working tree and carried files per call. This script collects, for CPython 3.12 on x86-64 Linux
(or --python X.Y, to rehearse elsewhere):
- every distribution that `reisoseg` needs (its requirements, followed through the installed metadata of this
  environment, at the versions installed here: the versions our tests ran with) that the machine's image lacks;
- our own package as a wheel;
and writes them to OUTPUT with their members compressed by LZMA (pip installs such wheels, and they are much smaller
than the published ones, SimpleITK's above all). It prints each wheel's size and the total with the working tree
against the limit, and exits non-zero when it does not fit; benchmarks/results/gpu_wheels.json keeps the sizes.
Needs the registry (it downloads):

    python benchmarks/gpu_wheels.py [--output .whl]

On the GPU machine benchmarks/gpu_run.sh installs them (`pip install --no-index --no-deps --target`, then
PYTHONPATH); benchmarks/gpu_rehearsal.sh rehearses that here.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import subprocess
import sys
import tempfile
import zipfile
from datetime import date
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

RECORD = Path(__file__).parent / "results" / "gpu_wheels.json"
DEVICE_PYTHON = "3.12"  # the GPU machine's CPython
LIMIT_BYTES = 64 * 2**20  # what one call to the GPU machine carries: working tree and carried files together
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")
# The GPU machine's image (its package list as read there on 2026-11-17), as far as reisoseg's requirements reach
DEVICE_IMAGE = frozenset({
    "certifi", "charset-normalizer", "click", "cloudpickle", "contourpy", "cycler", "filelock", "fonttools", "fsspec",
    "h5py", "idna", "imageio", "jinja2", "joblib", "kiwisolver", "lazy-loader", "markupsafe", "matplotlib", "mpmath",
    "msgpack", "narwhals", "networkx", "numpy", "packaging", "pandas", "pillow", "psutil", "pyparsing",
    "python-dateutil", "pyyaml", "requests", "scikit-image", "scikit-learn", "scipy", "setuptools", "six",
    "sortedcontainers", "sympy", "threadpoolctl", "tifffile", "toolz", "torch", "tqdm", "typing-extensions",
    "tzdata", "urllib3", "zipp"})
# Required by nnunet's metadata but never imported by training or prediction: DICOM conversion, and argparse (a
# standard module that an old PyPI distribution shadows)
NOT_IMPORTED = frozenset({"argparse", "dicom2nifti", "pydicom", "python-gdcm"})


def requirement_closure(root: str) -> dict[str, str]:
    """Installed distributions that `root` needs, followed through their requirements: name -> version."""
    found: dict[str, str] = {}
    pending = [root]
    while pending:
        name = canonicalize_name(pending.pop())
        if name in found:
            continue
        try:
            distribution = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        found[name] = distribution.version
        for line in distribution.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                pending.append(requirement.name)
    return found


def carried(root: str = "reisoseg") -> dict[str, str]:
    """What the GPU machine lacks of `root`'s requirements (not `root` itself): name -> version here."""
    return {name: version for name, version in sorted(requirement_closure(root).items())
            if name not in DEVICE_IMAGE | NOT_IMPORTED | {canonicalize_name(root)}}


def image_requirements(root: str = "reisoseg") -> list[str]:
    """name==version of what the GPU machine's image already holds of `root`'s requirements (torch aside), at the
    versions installed here: what a rehearsal elsewhere installs in place of that image."""
    return [f"{name}=={version}" for name, version in sorted(requirement_closure(root).items())
            if name in DEVICE_IMAGE and name != "torch"]


def _pip(*arguments: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *arguments], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"pip {' '.join(arguments)} failed:\n{result.stderr[-2000:]}")


def fetch(name: str, version: str, folder: Path, python: str = DEVICE_PYTHON) -> Path:
    """The CPython `python` x86-64 wheel of name==version in `folder`: downloaded, or built here from its source
    when the registry has no such wheel (pure-Python packages such as nnunet and medpy)."""
    before = set(folder.iterdir())
    platforms = [argument for platform in PLATFORMS for argument in ("--platform", platform)]
    try:
        _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
             *platforms, "-d", str(folder), f"{name}=={version}")
    except RuntimeError:
        _pip("wheel", "--no-deps", "-w", str(folder), f"{name}=={version}")
    (wheel,) = set(folder.iterdir()) - before
    tags = parse_wheel_filename(wheel.name)[3]
    interpreter = f"cp{python.replace('.', '')}"
    if not any(tag.interpreter in ("py3", interpreter) or tag.abi == "abi3" for tag in tags):
        raise RuntimeError(f"{wheel.name}: not a wheel CPython {python} installs")
    return wheel


def recompressed(wheel: Path, output: Path) -> Path:
    """`wheel` rewritten into `output` with every member compressed by LZMA (same names, same contents)."""
    target = output / wheel.name
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w", compression=zipfile.ZIP_LZMA) as packed:
        for member in source.infolist():
            packed.writestr(member, source.read(member), compress_type=zipfile.ZIP_LZMA)
    return target


def travelling_files(repository: Path) -> list[str]:
    """What travels with every call, relative to `repository`: the tracked files and the untracked ones git does not
    ignore (as the device tool copies them)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repository,
                            capture_output=True, check=True).stdout
    return [name for name in listed.decode().split("\0") if name and (repository / name).is_file()]


def working_tree_bytes(repository: Path) -> int:
    """Bytes of what travels with every call."""
    return sum((repository / name).stat().st_size for name in travelling_files(repository))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path(".whl"), help="folder for the wheels (default: .whl)")
    parser.add_argument("--python", default=DEVICE_PYTHON,
                        help="CPython version the wheels are for (default: %(default)s, the GPU machine's; another "
                             "one, for a rehearsal elsewhere, writes no record)")
    parser.add_argument("--print_image", action="store_true",
                        help="print the image's packages that reisoseg needs, as name==version, and exit")
    parser.add_argument("--print_travelling", action="store_true",
                        help="print the files that travel with every call, NUL-separated, and exit")
    arguments = parser.parse_args()
    repository = Path(__file__).resolve().parent.parent
    if arguments.print_image:
        print("\n".join(image_requirements()))
        return 0
    if arguments.print_travelling:
        sys.stdout.write("".join(f"{name}\0" for name in travelling_files(repository)))
        return 0
    output = arguments.output
    output.mkdir(parents=True, exist_ok=True)
    for old in output.glob("*.whl"):
        old.unlink()
    with tempfile.TemporaryDirectory() as scratch:
        downloads = Path(scratch)
        wheels = [fetch(name, version, downloads, arguments.python) for name, version in carried().items()]
        _pip("wheel", "--no-deps", "-w", str(downloads), str(repository))
        wheels.append(next(downloads.glob("reisoseg-*.whl")))
        sizes = {}
        for wheel in wheels:
            packed = recompressed(wheel, output)
            sizes[packed.name] = {"bytes": packed.stat().st_size, "published_bytes": wheel.stat().st_size}
            print(f"{packed.stat().st_size / 2**20:7.2f} MiB  {packed.name} ({wheel.stat().st_size / 2**20:.2f} "
                  f"MiB as published)")
    wheel_bytes = sum(size["bytes"] for size in sizes.values())
    tree = working_tree_bytes(repository)
    total = wheel_bytes + tree
    fits = total <= LIMIT_BYTES
    print(f"wheels {wheel_bytes / 2**20:.2f} MiB + working tree {tree / 2**20:.2f} MiB = {total / 2**20:.2f} MiB "
          f"of {LIMIT_BYTES / 2**20:.0f} MiB: {'fits' if fits else 'does NOT fit'}")
    if arguments.python == DEVICE_PYTHON:
        RECORD.write_text(json.dumps({
            "date": date.today().isoformat(), "python": DEVICE_PYTHON, "wheels": sizes, "wheel_bytes": wheel_bytes,
            "published_bytes": sum(size["published_bytes"] for size in sizes.values()), "working_tree_bytes": tree,
            "limit_bytes": LIMIT_BYTES, "fits": fits, "left_out": sorted(NOT_IMPORTED)}, indent=1))
    return 0 if fits else 1


if __name__ == "__main__":
    sys.exit(main())
