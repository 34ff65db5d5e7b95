"""TIFF stacks (ImageJ or OME metadata for spacing) and folders of per-section TIFF/PNG files."""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile

from reisoseg.errors import ReIsoSegError
from reisoseg.io.base import LABELS_CONTENT, SECTION_SUFFIXES, Volume, to_nanometres


def _xy_from_resolution(page: tifffile.TiffPage) -> tuple[float, float] | None:
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    x_num, x_den = tags["XResolution"].value
    y_num, y_den = tags["YResolution"].value
    if not x_num or not y_num:
        return None
    return y_den / y_num, x_den / x_num  # pixels per unit -> unit per pixel


def _spacing(handle: tifffile.TiffFile, source: str) -> tuple[float, float, float] | None:
    if handle.is_ome and handle.ome_metadata:
        pixels = re.search(r"<Pixels[^>]*>", handle.ome_metadata)
        if pixels:
            attributes = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(0)))
            if all(f"PhysicalSize{a}" in attributes for a in "ZYX"):
                values = [float(attributes[f"PhysicalSize{a}"]) for a in "ZYX"]
                unit = attributes.get("PhysicalSizeXUnit", "µm")
                return to_nanometres(values, unit, source)  # type: ignore[return-value]
    if handle.is_imagej and handle.imagej_metadata:
        meta = handle.imagej_metadata
        xy = _xy_from_resolution(handle.pages[0])
        if "spacing" in meta and xy is not None:
            return to_nanometres([float(meta["spacing"]), *xy], meta.get("unit", ""), source)  # type: ignore[return-value]
    return None


def read_tiff(path: str | os.PathLike) -> Volume:
    """A multipage TIFF as (z, y, x): memory-mapped when uncompressed, else read lazily (so blockwise segmentation
    of a compressed stack holds one block in memory)."""
    with tifffile.TiffFile(path) as handle:
        spacing = _spacing(handle, str(path))
        series = handle.series[0]
        shape = series.shape
        labels = (handle.imagej_metadata or {}).get("content") == LABELS_CONTENT if handle.is_imagej else \
            handle.is_ome and series.name == LABELS_CONTENT
        declared = (handle.imagej_metadata or {}).get("images") if handle.is_imagej else None
        readable = len(handle.pages)
    if declared and int(declared) != readable:  # tifffile only logs a truncated file and returns what it found
        raise ReIsoSegError(f"{path}: truncated or corrupt: metadata declares {declared} sections, "
                            f"{readable} readable")
    data = None
    try:
        data = tifffile.memmap(path, mode="r")
    except (ValueError, OSError):  # compressed or tiled: read lazily, page by page, through tifffile's zarr store
        import zarr

        data = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
        if data.ndim > 3 and all(s == 1 for s in data.shape[:-3]):
            data = data[(0,) * (data.ndim - 3)]
    data = np.squeeze(data) if data.ndim > 3 else data
    if data.ndim == 2:
        data = np.asarray(data)[None]
    if tuple(data.shape[-2:]) != tuple(shape[-2:]):
        raise ReIsoSegError(f"{path}: unexpected TIFF layout {shape}")
    return Volume(data, spacing, str(path), "tiff", labels)


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def section_files(folder: str | os.PathLike) -> list[Path]:
    files = sorted((p for p in Path(folder).iterdir() if p.suffix.lower() in SECTION_SUFFIXES and p.is_file()),
                   key=_natural_key)
    if not files:
        raise ReIsoSegError(f"{folder}: no .tif/.tiff/.png section files")
    return files


def _read_section(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".png":
        import imageio.v3 as iio

        image = iio.imread(path)
    else:
        image = tifffile.imread(path)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        if not all(np.array_equal(image[..., 0], image[..., c]) for c in range(1, 3)):
            raise ReIsoSegError(f"{path}: colour image; EM sections must be greyscale")
        image = image[..., 0]
    if image.ndim != 2:
        raise ReIsoSegError(f"{path}: expected a 2D section, got shape {image.shape}")
    return image


def read_sections(folder: str | os.PathLike) -> Volume:
    """A folder of per-section TIFF/PNG files (natural sort order) stacked along z."""
    files = section_files(folder)
    sections = []
    for file in files:
        section = _read_section(file)
        if sections and (section.shape != sections[0].shape or section.dtype != sections[0].dtype):
            raise ReIsoSegError(f"{file}: section {section.shape} {section.dtype} differs from "
                                f"{files[0].name} {sections[0].shape} {sections[0].dtype}")
        sections.append(section)
    # a folder carries no z spacing: the caller must supply it (--spacing)
    return Volume(np.stack(sections), None, str(folder), "sections")


IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))  # the types ImageJ TIFF holds


def write_tiff(path: str | os.PathLike, data: np.ndarray, spacing: Sequence[float], *, labels: bool = False) -> None:
    """An ImageJ hyperstack with spacing in nm (Fiji and napari read it back) for the types ImageJ holds, integers
    whose values fit included (stored as uint16: object ids); otherwise (object ids beyond 65535, int16, float64)
    an OME-TIFF, which keeps the type and the spacing. `labels` marks the file as label ids for readers."""
    z, y, x = (float(s) for s in spacing)
    data = np.ascontiguousarray(data)
    if data.dtype.kind in "iu" and data.dtype not in IMAGEJ_DTYPES and data.size and \
            0 <= data.min() and data.max() <= np.iinfo(np.uint16).max:
        data = data.astype(np.uint16)
    if data.dtype in IMAGEJ_DTYPES:
        tifffile.imwrite(path, data, imagej=True, resolution=(1.0 / x, 1.0 / y),
                         metadata={"spacing": z, "unit": "nm", "axes": "ZYX",
                                   **({"content": LABELS_CONTENT} if labels else {})})
        return
    tifffile.imwrite(path, data, ome=True, metadata={
        "axes": "ZYX", **({"Name": LABELS_CONTENT} if labels else {}),
        **{f"PhysicalSize{axis}": size for axis, size in zip("ZYX", (z, y, x))},
        **{f"PhysicalSize{axis}Unit": "nm" for axis in "ZYX"}})
