"""A trained ReIsoSeg network as a BioImage.IO model package that ilastik, deepImageJ and bioimageio.core run.

Written with bioimageio.spec 0.5.12, the spec that bioimageio.core 0.11.0 pins, whatever the newest is. The package
holds the inference branch only (the PI module and deep supervision are training-time parts), as TorchScript,
which needs no code, and as a state dict whose architecture is `reisoseg.network.ReIsoSegRMV6` with its arguments.
What nnU-Net does around the network cannot be written in the format (resampling to the planned spacing, Gaussian
blending of sliding windows, test-time mirroring, the decoding of objects): the package's description and
documentation say so.
"""
from __future__ import annotations

import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import bioimageio.spec.model.v0_5 as spec
import matplotlib
import numpy as np
import torch
from bioimageio.spec import save_bioimageio_package

from reisoseg.errors import ReIsoSegError
from reisoseg.instances.target import InstanceSettings
from reisoseg.io.atomic import atomic_file
from reisoseg.network import required_divisor
from reisoseg.network.trained import TrainedNetwork
from reisoseg.synthetic import generate_volume

SPEC_VERSION = "0.5.12"
METHOD_CITATION = spec.CiteEntry(
    text="Guo, Wang, Zhai, Zhang, Liu, Han: Re-isotropic Segmentation for Subcellular Ultrastructure in Anisotropic "
         "EM Images. IEEE Transactions on Medical Imaging, 2024", doi=spec.Doi("10.1109/TMI.2024.3511599"))
EPSILON = 1e-6  # bioimageio's zero_mean_unit_variance: (x - mean) / (std + eps); nnU-Net adds 1e-8
SPACE_AXES = ("z", "y", "x")
STATE_DICT_FILE, TORCHSCRIPT_FILE = "reisoseg_state_dict.pt", "reisoseg_torchscript.pt"


@dataclass(frozen=True)
class PackageInfo:
    """What a package says about itself besides the network."""

    name: str
    authors: Sequence[str]
    source: str  # where the network came from (a model folder and fold), for the documentation
    cite: Sequence[str] = ()  # further DOIs, after the method's
    license: str = "CC-BY-4.0"
    instance_settings: InstanceSettings | None = None
    tags: Sequence[str] = field(default=("electron-microscopy", "3d", "semantic-segmentation", "anisotropic",
                                         "reisoseg", "nnu-net"))


def export_package(trained: TrainedNetwork, output: str | Path, info: PackageInfo) -> Path:
    """Write `output` (a .zip BioImage.IO model package) for `trained`; atomically, so that a failed export leaves
    nothing behind."""
    output = Path(output)
    if output.suffix != ".zip":
        raise ReIsoSegError(f"{output}: name the package *.zip")
    with tempfile.TemporaryDirectory(prefix="reisoseg_bioimageio_") as scratch:
        description = _description(trained, info, Path(scratch))
        with atomic_file(output) as temporary:
            save_bioimageio_package(description, output_path=temporary)
    return output


def _description(trained: TrainedNetwork, info: PackageInfo, folder: Path) -> spec.ModelDescr:
    network = trained.network()
    test_input = _test_input(trained)
    with torch.no_grad(), warnings.catch_warnings():
        # the input-size check is traced as a constant, which is right: the declared sizes keep it true
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        test_output = torch.softmax(network(torch.from_numpy(_normalised(test_input, trained.normalisation))), 1)
        torch.jit.trace(network, torch.from_numpy(test_input)).save(str(folder / TORCHSCRIPT_FILE))
    torch.save(trained.state_dict, folder / STATE_DICT_FILE)
    np.save(folder / "test_input.npy", test_input)
    np.save(folder / "test_output.npy", test_output.numpy())
    _cover(test_input, test_output.numpy(), folder / "cover.png")
    (folder / "README.md").write_text(_documentation(trained, info))
    pytorch_version = spec.Version(torch.__version__.split("+")[0])
    return spec.ModelDescr(
        name=info.name, description=_summary(trained), format_version=SPEC_VERSION, type="model",
        authors=[spec.Author(name=name) for name in info.authors],
        cite=[METHOD_CITATION, *(spec.CiteEntry(text=f"doi:{doi}", doi=spec.Doi(doi)) for doi in info.cite)],
        license=spec.LicenseId(info.license), tags=list(info.tags),
        documentation=spec.FileDescr(source=folder / "README.md"),
        covers=[spec.FileDescr(source=folder / "cover.png")], inputs=[_input(trained, folder)],
        outputs=[_output(trained, folder)],
        weights=spec.WeightsDescr(
            torchscript=spec.TorchscriptWeightsDescr(source=folder / TORCHSCRIPT_FILE,
                                                     pytorch_version=pytorch_version),
            pytorch_state_dict=spec.PytorchStateDictWeightsDescr(
                source=folder / STATE_DICT_FILE, pytorch_version=pytorch_version,
                architecture=spec.ArchitectureFromLibraryDescr(callable="ReIsoSegRMV6",
                                                               import_from="reisoseg.network",
                                                               kwargs=trained.kwargs()))),
        config={"reisoseg": {"trainer": trained.trainer, "patch_size": list(trained.patch_size),
                             "spacing_nm": list(trained.spacing), "source": info.source,
                             "instances": None if info.instance_settings is None
                             else info.instance_settings.to_dict()}})


def _input(trained: TrainedNetwork, folder: Path) -> spec.InputTensorDescr:
    divisor = required_divisor(trained.ani_scale)
    preprocessing = [spec.EnsureDtypeDescr(kwargs=spec.EnsureDtypeKwargs(dtype="float32"))]
    if trained.normalisation == "zscore":
        preprocessing.append(spec.ZeroMeanUnitVarianceDescr(kwargs=spec.ZeroMeanUnitVarianceKwargs(
            axes=[spec.AxisId(axis) for axis in SPACE_AXES], eps=EPSILON)))
    return spec.InputTensorDescr(
        id=spec.TensorId("raw"), description="EM volume at the planned spacing (z y x, nm)",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=[f"channel{i}" for i in range(trained.input_channels)]),
              *(spec.SpaceInputAxis(id=spec.AxisId(axis), size=spec.ParameterizedSize(min=int(patch), step=int(step)),
                                    unit="nanometer", scale=float(scale))
                for axis, patch, step, scale in zip(SPACE_AXES, trained.patch_size, divisor, trained.spacing))],
        test_tensor=spec.FileDescr(source=folder / "test_input.npy"),
        data=spec.IntervalOrRatioDataDescr(type="float32"), preprocessing=preprocessing)


def _output(trained: TrainedNetwork, folder: Path) -> spec.OutputTensorDescr:
    """Class probabilities; each space axis has a halo of a quarter patch, the context nnU-Net's half-overlapping
    windows give every voxel."""
    return spec.OutputTensorDescr(
        id=spec.TensorId("probabilities"), description="class probabilities (softmax over the channel axis)",
        axes=[spec.BatchAxis(), spec.ChannelAxis(channel_names=list(trained.class_names)),
              *(spec.SpaceOutputAxisWithHalo(id=spec.AxisId(axis), halo=int(patch) // 4, unit="nanometer",
                                             scale=float(scale),
                                             size=spec.SizeReference(tensor_id=spec.TensorId("raw"),
                                                                     axis_id=spec.AxisId(axis)))
                for axis, patch, scale in zip(SPACE_AXES, trained.patch_size, trained.spacing))],
        test_tensor=spec.FileDescr(source=folder / "test_output.npy"),
        data=spec.IntervalOrRatioDataDescr(type="float32", range=(0.0, 1.0)),
        postprocessing=[spec.SoftmaxDescr(kwargs=spec.SoftmaxKwargs(axis=spec.AxisId("channel")))])


def _test_input(trained: TrainedNetwork) -> np.ndarray:
    """A synthetic EM volume of one patch at the planned spacing's z/xy ratio (batch, channel, z, y, x)."""
    ratio = max(1, min(12, round(trained.spacing[0] / trained.spacing[2])))
    volume = generate_volume(tuple(int(s) for s in trained.patch_size), ratio, seed=0)
    image = np.ascontiguousarray(volume.image, dtype=np.float32)
    return np.repeat(image[None, None], trained.input_channels, axis=1)


def _normalised(image: np.ndarray, normalisation: str) -> np.ndarray:
    """What the package's preprocessing does to `image`."""
    if normalisation != "zscore":
        return image
    axes = tuple(range(2, image.ndim))
    return ((image - image.mean(axis=axes, keepdims=True)) / (image.std(axis=axes, keepdims=True) + EPSILON)).astype(
        np.float32)


def _cover(image: np.ndarray, probabilities: np.ndarray, path: Path) -> None:
    """The middle section of the test input beside its most probable classes (2:1, as the zoo shows covers)."""
    matplotlib.use("Agg")
    from matplotlib import pyplot

    section = image.shape[2] // 2
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(6, 3), dpi=100)
    left.imshow(image[0, 0, section], cmap="gray")
    right.imshow(probabilities[0].argmax(0)[section], cmap="viridis", vmin=0, vmax=probabilities.shape[1] - 1)
    for axes, title in ((left, "EM section"), (right, "ReIsoSeg classes")):
        axes.set_title(title)
        axes.axis("off")
    figure.savefig(path)
    pyplot.close(figure)


def _summary(trained: TrainedNetwork) -> str:
    spacing = " x ".join(f"{s:g}" for s in trained.spacing)
    return (f"ReIsoSeg ({trained.trainer}): anisotropy-aware 3D segmentation of {', '.join(trained.class_names[1:])} "
            f"in EM volumes at {spacing} nm (z y x). Inputs must already have this spacing; sliding-window "
            f"blending, test-time mirroring and object decoding are not part of the package.")


def _documentation(trained: TrainedNetwork, info: PackageInfo) -> str:
    spacing = " x ".join(f"{s:g}" for s in trained.spacing)
    divisor = " x ".join(str(d) for d in required_divisor(trained.ani_scale))
    patch = " x ".join(str(p) for p in trained.patch_size)
    objects = ""
    if info.instance_settings is not None:
        objects = (
            "\n## Objects\n\nThis model was trained on an instance target: its classes are background, the interior "
            "of objects and their boundary. The package gives the three probabilities only. To decode separate "
            "objects, run the package with `reisoseg` (`pip install reisoseg`):\n\n"
            "```bash\nreisoseg segment -i stack.zarr -o objects.zarr --model model.zip --instances\n```\n\n"
            "The decoding settings the model was exported with are in this package's `config.reisoseg.instances`.\n")
    return f"""# {info.name}

{_summary(trained)}

## What it segments

Classes (output channels): {', '.join(trained.class_names)}. Trained with `{trained.trainer}` from {info.source}.
The network is ReIsoSeg's ReIsoSegRMV6 with the pooling pattern {tuple(trained.ani_scale)}: its first pooling
stages are in-plane only, for sections several times thicker than their pixels.

## Input

One channel of EM intensities at {spacing} nm (z y x). Each spatial size must be at least the training patch
({patch}) and grow in steps of {divisor}. The package normalises each input to zero mean and unit variance, as
nnU-Net normalises a whole volume: give it whole volumes, or tiles large enough for their statistics to be the
volume's.

## What the format cannot express

- Resampling: nnU-Net resamples inputs to the planned spacing. Here, inputs must already have it.
- Sliding windows: nnU-Net predicts overlapping windows of one patch and blends them with Gaussian weights; a
  consumer that tiles uses the halo declared on the outputs instead.
- Test-time augmentation (mirroring) is not applied.
{objects}
## Citation

{METHOD_CITATION.text}, doi:{METHOD_CITATION.doi}.
"""
