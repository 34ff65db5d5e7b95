"""A v2 dataset's cross-validation split, read as the JSON v2 writes (no nnU-Net import needed)."""
from __future__ import annotations

import json
import os
from pathlib import Path

from reisoseg.errors import ReIsoSegError
from reisoseg.nnunet_v2.training import require_v2_environment


def fold_validation_files(model_folder: str | os.PathLike, fold: str | int) -> list[tuple[str, Path, Path]]:
    """(case, image, object ids) of the cases nnU-Net v2 held out of `fold` (its splits_final.json), from the raw
    dataset's imagesTr/ and instancesTr/ (written for datasets with an instance target)."""
    require_v2_environment()
    model_folder = Path(model_folder)
    dataset = model_folder.parent.name
    splits = Path(os.environ["nnUNet_preprocessed"]) / dataset / "splits_final.json"
    if not splits.is_file():
        raise ReIsoSegError(f"{splits}: no cross-validation splits, so fold {fold} has no validation cases")
    raw = Path(os.environ.get("nnUNet_raw", "/nonexistent")) / dataset
    if not (raw / "instancesTr").is_dir():
        raise ReIsoSegError(f"{raw / 'instancesTr'}: not found (the dataset was written without its training "
                            f"objects); pass --images and --references")
    ending = json.loads((model_folder / "dataset.json").read_text())["file_ending"]
    cases = json.loads(splits.read_text())[int(fold)]["val"]
    return [(case, raw / "imagesTr" / f"{case}_0000{ending}", raw / "instancesTr" / f"{case}{ending}")
            for case in cases]
