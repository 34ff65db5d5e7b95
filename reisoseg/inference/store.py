"""The output of a blockwise run: an OME-Zarr labels volume built in `OUT.zarr.partial` and renamed when complete.

The partial folder is the run's record: `reisoseg_segment.json` holds the settings and the whole-volume statistics,
and `.blocks/` one marker per finished block, written after the block's data (instance decoding adds one marker
folder per pass, `.seeds/`, `.objects/` and `.relabel/`, whose markers may carry the block's small results). A run
started again with the same settings skips the marked blocks; a different run refuses to mix with it. Each block is
exactly one chunk of every array, so blocks written by different workers never touch the same file.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import zarr

from reisoseg.errors import ReIsoSegError
from reisoseg.io.atomic import atomic_file

MANIFEST = "reisoseg_segment.json"
MARKERS = ".blocks"
LABELS = "0"
PROBABILITIES = "probabilities"


def block_name(index: Sequence[int]) -> str:
    return "_".join(str(int(i)) for i in index)


class BlockStore:
    """Labels (uint8, and optionally float16 probabilities) of a volume, written block by block."""

    def __init__(self, target: str | os.PathLike):
        self.target = Path(target).absolute()  # Dask workers may run in another working directory
        if self.target.suffix != ".zarr":
            raise ReIsoSegError(f"{self.target}: the output of blockwise segmentation is OME-Zarr; name it *.zarr")
        self.partial = self.target.with_name(self.target.name + ".partial")

    def open(self, settings: dict[str, Any], *, overwrite: bool) -> dict[str, Any] | None:
        """Check the target; return the recorded manifest of an unfinished run with the same settings, else None."""
        if self.target.exists():
            if not overwrite:
                raise ReIsoSegError(f"{self.target}: already exists (pass `overwrite` to replace it)")
        manifest_path = self.partial / MANIFEST
        if not self.partial.exists():
            return None
        if overwrite:
            shutil.rmtree(self.partial)
            return None
        if not manifest_path.is_file():
            raise ReIsoSegError(f"{self.partial}: unfinished output without {MANIFEST}; remove it or pass `overwrite`")
        recorded = json.loads(manifest_path.read_text())
        if recorded.get("settings") != settings:
            changed = sorted(k for k in set(settings) | set(recorded.get("settings", {}))
                             if settings.get(k) != recorded.get("settings", {}).get(k))
            raise ReIsoSegError(f"{self.partial}: unfinished run with other settings ({', '.join(changed)}); "
                                f"pass `overwrite` to start over")
        return recorded

    def create(self, manifest: dict[str, Any], shape: Sequence[int], block: Sequence[int], num_classes: int,
               probabilities: bool, arrays: dict[str, str] | None = None) -> None:
        """Create the empty arrays (`arrays`: name -> dtype, default the uint8 labels) and record the manifest (the
        run's identity and statistics)."""
        from reisoseg.io.ome_zarr import ome_attributes

        self.partial.mkdir(parents=True)
        group = zarr.open_group(str(self.partial), mode="w", zarr_format=2)
        for name, dtype in (arrays or {LABELS: "uint8"}).items():
            group.create_array(name, shape=tuple(shape), chunks=tuple(block), dtype=dtype, fill_value=0)
        if probabilities:
            group.create_array(PROBABILITIES, shape=(num_classes, *shape), chunks=(num_classes, *block),
                               dtype="float16", fill_value=0)
        group.attrs.update(ome_attributes(manifest["settings"]["spacing"], labels=True, name="segmentation"))
        (self.partial / MARKERS).mkdir()
        with atomic_file(self.partial / MANIFEST) as temporary:
            temporary.write_text(json.dumps(manifest, indent=1))

    def _markers(self, stage: str) -> Path:
        return self.partial / (MARKERS if stage == "blocks" else f".{stage}")

    def finished(self, stage: str = "blocks") -> set[str]:
        """Names of the blocks whose `stage` is done."""
        folder = self._markers(stage)
        return {p.name for p in folder.iterdir() if not p.name.startswith(".")} if folder.is_dir() else set()

    def mark_finished(self, index: Sequence[int], stage: str = "blocks", payload: str = "done\n") -> None:
        """Record a finished block (after its data); `payload` is what the stage needs later (small)."""
        self._markers(stage).mkdir(exist_ok=True)
        with atomic_file(self._markers(stage) / block_name(index)) as temporary:
            temporary.write_text(payload)

    def marker(self, index: Sequence[int], stage: str) -> str:
        return (self._markers(stage) / block_name(index)).read_text()

    def array(self, name: str = LABELS) -> zarr.Array:
        return zarr.open_array(str(self.partial / name), mode="r+")

    def create_array(self, name: str, dtype: str) -> zarr.Array:
        """A volume-shaped array chunked like the labels, created once (a resumed run reuses it)."""
        group = zarr.open_group(str(self.partial), mode="r+")
        if name in group:
            return group[name]
        labels = group[LABELS] if LABELS in group else next(iter(group.arrays()))[1]
        return group.create_array(name, shape=labels.shape, chunks=labels.chunks, dtype=dtype, fill_value=0)

    def complete(self, *, drop: Sequence[str] = (), attributes: dict[str, Any] | None = None) -> Path:
        """Record the run in the group attributes (plus `attributes`), delete the `drop` arrays (intermediate
        results) and move the finished volume to its final name."""
        manifest = json.loads((self.partial / MANIFEST).read_text())
        group = zarr.open_group(str(self.partial), mode="r+")
        group.attrs["reisoseg"] = {**manifest, **(attributes or {}), "complete": True}
        for name in drop:
            shutil.rmtree(self.partial / name, ignore_errors=True)
        for folder in self.partial.glob(".*"):
            if folder.is_dir():
                shutil.rmtree(folder)
        (self.partial / MANIFEST).unlink()
        if self.target.exists():
            shutil.rmtree(self.target)
        os.replace(self.partial, self.target)
        return self.target
