"""The instance-aware training target: background / interior / boundary classes derived from instance ids.

nnU-Net v1 learns it as ordinary semantic classes, so planning, augmentation and deep supervision stay nnU-Net's.
The boundary is measured in nm with an anisotropic distance transform, not in voxels: at 40 x 5 x 5 nm a default
width of two in-plane pixels (10 nm) never reaches the next section, so z-faces against background stay interior.
A one-voxel z-face would be a band 40 nm thick, eight times the in-plane one, and would turn the first and last
section of every mitochondrion into boundary. Where two *different* objects touch along z, the contact voxels are
boundary whatever the spacing: that is what keeps objects stacked in z apart.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from reisoseg.io.atomic import atomic_file
from reisoseg.layout import INSTANCES_FILE, INSTANCES_KEY

DECODING_FIELDS = ("seed_threshold", "seed_erosion_nm", "min_volume_nm3", "min_score")  # chosen by calibration
BOUNDARY_PIXELS = 2.0  # default boundary width in in-plane pixels
MIN_VOLUME_QUANTILE, MIN_VOLUME_FRACTION = 10, 0.5  # default minimum object: half the 10th percentile of training


@dataclass(frozen=True)
class InstanceSettings:
    """How a model's classes encode objects, and how predictions are decoded into them (stored with the model)."""

    instance_class: int  # label of object interiors; also the semantic class that boundaries fold back into
    boundary_class: int
    boundary_nm: float
    min_volume_nm3: float  # decoded objects smaller than this are dropped
    seed_threshold: float = 0.5  # interior probability for a seed voxel
    seed_erosion_nm: float = 0.0  # seeds keep only interior voxels farther than this from any non-interior voxel
    min_score: float = 0.0  # decoded objects whose score (mean foreground probability) is lower are dropped

    @classmethod
    def from_dict(cls, values: dict) -> InstanceSettings:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in values.items() if k in names})

    def to_dict(self) -> dict:
        return asdict(self)

    def semantic(self, labels: np.ndarray) -> np.ndarray:
        """Boundary voxels back to the object class: the semantic segmentation users expect."""
        return np.where(labels == self.boundary_class, self.instance_class, labels).astype(labels.dtype)


def default_boundary_nm(spacing: Sequence[float]) -> float:
    return BOUNDARY_PIXELS * float(min(spacing[1:]))


def instance_target(instances: np.ndarray, spacing: Sequence[float], *, boundary_nm: float | None = None,
                    interior: int = 1, boundary: int = 2) -> np.ndarray:
    """uint8 classes of a (z, y, x) instance-id volume: 0 background, `interior`, `boundary` (see module doc)."""
    import edt

    if boundary_nm is None:
        boundary_nm = default_boundary_nm(spacing)
    ids = np.ascontiguousarray(instances.astype(np.uint32, copy=False))
    distance = edt.edt(ids, anisotropy=tuple(float(s) for s in spacing), black_border=False)
    objects = ids > 0
    edge = objects & (distance <= boundary_nm)
    contact = (ids[1:] != ids[:-1]) & objects[1:] & objects[:-1]  # two different objects on adjacent sections
    edge[1:] |= contact
    edge[:-1] |= contact
    target = np.zeros(ids.shape, np.uint8)
    target[objects] = interior
    target[edge] = boundary
    return target


def object_volumes_nm3(instances: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    counts = np.bincount(instances.ravel().astype(np.int64))[1:]
    return counts[counts > 0] * float(np.prod(spacing))


def training_settings(volumes_nm3: Sequence[float], spacing: Sequence[float], *, instance_class: int = 1,
                      boundary_class: int = 2, boundary_nm: float | None = None) -> dict:
    """What dataset.json records under INSTANCES_KEY: the settings and the training objects they came from."""
    volumes = np.asarray(volumes_nm3, dtype=np.float64)
    if volumes.size == 0:
        raise ValueError("no objects in the training labels: an instance target needs at least one")
    settings = InstanceSettings(instance_class, boundary_class,
                                boundary_nm if boundary_nm is not None else default_boundary_nm(spacing),
                                MIN_VOLUME_FRACTION * float(np.percentile(volumes, MIN_VOLUME_QUANTILE)))
    return {**settings.to_dict(), "training_objects": int(volumes.size),
            "training_volume_nm3": {q: float(np.percentile(volumes, int(q))) for q in ("10", "50", "90")}}


def model_instance_settings(model_folder: str | Path) -> InstanceSettings | None:
    """The settings stored beside a trained model, or None for a semantic model."""
    path = Path(model_folder) / INSTANCES_FILE
    return InstanceSettings.from_dict(json.loads(path.read_text())) if path.is_file() else None


def store_instance_settings(dataset_json: Path, model_folder: Path) -> None:
    """Copy the instance target's settings from a task's dataset.json beside a model, where prediction finds them
    (neither engine's model folder keeps them otherwise: v1 copies no dataset.json there, v2 rewrites it)."""
    if not dataset_json.is_file():
        return
    record = json.loads(dataset_json.read_text()).get(INSTANCES_KEY)
    if record is not None:
        model_folder.mkdir(parents=True, exist_ok=True)
        with atomic_file(model_folder / INSTANCES_FILE) as temporary:
            temporary.write_text(json.dumps(record, indent=1))
