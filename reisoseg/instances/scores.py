"""Object scores beside instance labels: `<labels>.scores.json` ({"id": score}), or in an OME-Zarr's attributes."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

SCORES_ATTRIBUTE = "scores"  # under the zarr group's "reisoseg" attributes


def scores_path(labels: str | os.PathLike) -> Path:
    from reisoseg.io.volume import split_key, volume_stem

    path = Path(split_key(labels)[0])
    return path.with_name(f"{volume_stem(path)}.scores.json")


def write_scores(labels: str | os.PathLike, scores: Mapping[int, float]) -> Path:
    from reisoseg.io.atomic import atomic_file

    target = scores_path(labels)
    with atomic_file(target) as temporary:
        temporary.write_text(json.dumps({str(k): round(float(v), 6) for k, v in sorted(scores.items())}))
    return target


def read_scores(labels: str | os.PathLike) -> dict[int, float] | None:
    """The scores of an instance label volume, or None when it has none (AP then ranks all objects equally)."""
    path = Path(str(labels))
    if path.suffix == ".zarr" and path.is_dir():
        import zarr

        recorded = dict(zarr.open_group(str(path), mode="r").attrs).get("reisoseg", {}).get(SCORES_ATTRIBUTE)
        return None if recorded is None else {int(k): float(v) for k, v in recorded.items()}
    sidecar = scores_path(labels)
    if not sidecar.is_file():
        return None
    return {int(k): float(v) for k, v in json.loads(sidecar.read_text()).items()}
