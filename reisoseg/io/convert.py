"""EM volumes in any supported format -> an nnU-Net v1 raw task, validated before anything is written."""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from reisoseg.errors import ReIsoSegError
from reisoseg.io.nnunet_task import Case, ignore_label, write_task
from reisoseg.io.validation import check_image, check_labels, check_same_shape, resolve_spacing, z_axis_warning
from reisoseg.io.volume import open_volume
from reisoseg.layout import IGNORE_LABEL_NAME


@dataclass
class LabelMapping:
    """Class names in output order, each with the source label values that become it (others: background)."""

    classes: dict[str, tuple[int, ...]]
    strict: bool = False  # True: source values outside the mapping are an error

    @classmethod
    def parse(cls, items: Sequence[str]) -> LabelMapping:
        """`["mitochondria=191", "synapse=223,224"]` -> mapping; ReIsoSegError on bad syntax."""
        classes = {}
        for item in items:
            match = re.fullmatch(r"\s*([A-Za-z][\w-]*)\s*=\s*(\d+(?:\s*,\s*\d+)*)\s*", item)
            if not match:
                raise ReIsoSegError(f"`label_map` {item!r}: expected NAME=VALUE[,VALUE...], e.g. mitochondria=191")
            classes[match.group(1)] = tuple(int(v) for v in match.group(2).split(","))
        return cls(classes)

    @classmethod
    def identity(cls, names: Sequence[str]) -> LabelMapping:
        """Labels already 0..K: class i is value i; any other value is an error."""
        return cls({name: (i,) for i, name in enumerate(names, start=1)}, strict=True)

    def declared_values(self) -> set[int]:
        return {0, *(v for values in self.classes.values() for v in values)}

    def apply(self, source: str, labels: np.ndarray, also_allowed: int | None = None) -> np.ndarray:
        """Class indices 1..K from source values; `also_allowed` is a further accepted value (it maps to 0)."""
        if self.strict:
            check_labels(source, labels, self.declared_values() | ({also_allowed} - {None}))
        else:
            check_labels(source, labels, set(np.unique(labels).astype(np.int64).tolist()))  # dtype/finite checks
        out = np.zeros(labels.shape, np.uint8)
        for index, values in enumerate(self.classes.values(), start=1):
            out[np.isin(labels, values)] = index
        return out


def parse_sections(text: str | None) -> tuple[int, int] | None:
    """'16-19' -> (16, 20) (inclusive range, 0-based sections), '5' -> (5, 6)."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", text)
    if not match:
        raise ReIsoSegError(f"`test_sections` {text!r}: expected FIRST-LAST, e.g. 16-19")
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else first
    if last < first:
        raise ReIsoSegError(f"`test_sections` {text!r}: last section before first")
    return first, last + 1


def parse_section_list(text: str | None) -> frozenset[int] | None:
    """'0,5,10-12' -> {0, 5, 10, 11, 12} (0-based sections)."""
    if not text:
        return None
    sections: set[int] = set()
    for item in text.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+))?\s*", item)
        if not match or (match.group(2) and int(match.group(2)) < int(match.group(1))):
            raise ReIsoSegError(f"`annotated_sections` {text!r}: expected sections and ranges, e.g. 0,5,10-12")
        sections.update(range(int(match.group(1)), int(match.group(2) or match.group(1)) + 1))
    return frozenset(sections)


def _unannotated(source: str, raw: np.ndarray, annotated_sections: frozenset[int] | None,
                 ignore_value: int | None) -> np.ndarray | None:
    """Where a label volume holds no annotation: sections outside `annotated_sections`, voxels of `ignore_value`."""
    if annotated_sections is None and ignore_value is None:
        return None
    unannotated = np.zeros(raw.shape, bool) if ignore_value is None else raw == ignore_value
    if annotated_sections is not None:
        beyond = [z for z in annotated_sections if z >= raw.shape[0]]
        if beyond:
            raise ReIsoSegError(f"{source}: `annotated_sections` {sorted(beyond)} beyond its {raw.shape[0]} sections")
        unannotated |= ~np.isin(np.arange(raw.shape[0]), sorted(annotated_sections))[:, None, None]
    return unannotated


def convert_to_task(images: Sequence[str | os.PathLike], labels: Sequence[str | os.PathLike], *,
                    task_id: int, name: str, mapping: LabelMapping, spacing: Sequence[float] | None = None,
                    test_sections: tuple[int, int] | None = None, test_volumes: Sequence[int] = (),
                    raw_data_base: str | os.PathLike, modality: str = "EM", overwrite: bool = False,
                    instance_class: str | None = None, instance_labels: bool = False,
                    annotated_sections: frozenset[int] | None = None, ignore_value: int | None = None,
                    engine: str = "v1") -> Path:
    """Read, validate and split every (image, labels) pair, then write the task atomically, in `engine`'s layout.

    With `test_sections`, those sections of every volume become a test case and the rest training cases (split
    into two cases if the test range lies inside, so that no false neighbours are created). `test_volumes` sends
    whole volumes to the test set. `instance_class` (a class name) trains that class as separate objects
    (`reisoseg.instances.target`); `instance_labels` says the label files hold object ids (0 background, each other
    value one object of that class) rather than classes.

    Sparse annotation: voxels of sections outside `annotated_sections` (0-based, of every volume) and voxels of
    source value `ignore_value` get the label `ignore`, the highest label value, which training leaves out. Test
    cases must be fully annotated (they are scored).
    """
    sparse = annotated_sections is not None or ignore_value is not None
    if sparse and instance_class is not None:
        raise ReIsoSegError("sparse annotation (`annotated_sections`, `ignore_value`) and the instance target "
                            "(`instance_class`) cannot be combined yet: the object boundaries of unannotated voxels "
                            "are unknown")
    if ignore_value is not None and any(ignore_value in values for values in mapping.classes.values()):
        raise ReIsoSegError(f"`ignore_value` {ignore_value} is also the value of a class")
    if instance_labels and instance_class is None:
        raise ReIsoSegError("`instance_labels` needs `instance_class`: name the class the objects belong to")
    if instance_class is not None and instance_class not in mapping.classes and not instance_labels:
        raise ReIsoSegError(f"instance class {instance_class!r} is not one of the classes {list(mapping.classes)}")
    if len(images) != len(labels):
        raise ReIsoSegError(f"{len(images)} `images` but {len(labels)} `labels`: give one label volume per image")
    if not mapping.classes:
        raise ReIsoSegError("declare the classes: `label_map` NAME=VALUE ... or `classes` NAME ...")
    bad = [i for i in test_volumes if not 0 <= i < len(images)]
    if bad:
        raise ReIsoSegError(f"`test_volumes` {bad}: there are {len(images)} volumes (0-{len(images) - 1})")
    training, test = [], []
    present: set[int] = set()  # the label values written, to refuse a declared class that occurs nowhere
    for index, (image_path, label_path) in enumerate(zip(images, labels)):
        image_volume = open_volume(image_path)
        label_volume = open_volume(label_path)
        check_same_shape(image_volume.source, image_volume.shape, label_volume.source, label_volume.shape)
        volume_spacing = resolve_spacing(image_volume.source, image_volume.spacing, spacing)
        if label_volume.spacing is not None and not np.allclose(label_volume.spacing, volume_spacing, rtol=0.01):
            raise ReIsoSegError(f"{label_volume.source}: label spacing {list(label_volume.spacing)} nm differs from "
                                f"the image's {list(volume_spacing)} nm")
        warning = z_axis_warning(image_volume.source, volume_spacing)
        if warning:
            print(f"reisoseg: warning: {warning}", file=sys.stderr)
        image = image_volume.read()
        check_image(image_volume.source, image)
        if instance_labels:
            objects = label_volume.read()
            if objects.dtype.kind not in "iu" or (objects < 0).any():
                raise ReIsoSegError(f"{label_volume.source}: object ids must be non-negative integers, got "
                                    f"{objects.dtype}")
            label, objects = (objects > 0).astype(np.uint8), objects.astype(np.uint32)
        else:
            raw = label_volume.read()
            unannotated = _unannotated(label_volume.source, raw, annotated_sections, ignore_value)
            label, objects = mapping.apply(label_volume.source, raw, also_allowed=ignore_value), None
            if unannotated is not None:
                label[unannotated] = len(mapping.classes) + 1
        present.update(int(value) for value in np.unique(label))
        stem = f"vol{index:02d}"
        if sparse:
            held_out = slice(None) if index in test_volumes else slice(*(test_sections or (0, 0)))
            if (label[held_out] == len(mapping.classes) + 1).any():
                raise ReIsoSegError(f"{label_volume.source}: its test sections hold unannotated voxels; test cases "
                                    f"must be fully annotated (they are scored)")
        if index in test_volumes:
            test.append(Case(f"{stem}_test", image, label, volume_spacing, objects))
            continue
        if test_sections is None:
            training.append(Case(stem, image, label, volume_spacing, objects))
            continue
        first, stop = test_sections
        if stop > image.shape[0]:
            raise ReIsoSegError(f"{image_volume.source}: `test_sections` {first}-{stop - 1} beyond its "
                                f"{image.shape[0]} sections")
        test.append(Case(f"{stem}_test", image[first:stop], label[first:stop], volume_spacing,
                         None if objects is None else objects[first:stop]))
        for suffix, part in (("a", slice(0, first)), ("b", slice(stop, None))):
            if image[part].shape[0] > 0:
                training.append(Case(f"{stem}_train{suffix}", image[part], label[part], volume_spacing,
                                     None if objects is None else objects[part]))
    names = [instance_class] if instance_labels else list(mapping.classes)
    for value, class_name in enumerate(names, start=1):
        if value not in present:
            source_values = "object ids > 0" if instance_labels else \
                "value " + ",".join(str(v) for v in mapping.classes[class_name])
            raise ReIsoSegError(f"class {class_name!r} ({source_values}) occurs in none of the label files "
                                f"({', '.join(map(str, labels))}); check `label_map`")
    if not training:
        raise ReIsoSegError("no training volume left after the test split")
    for case in training + test:  # split parts must still be usable on their own
        check_image(f"{case.name} (after the split)", case.image)
    labels_out = {i: n for i, n in enumerate(names, start=1)}
    if sparse:
        labels_out[len(names) + 1] = IGNORE_LABEL_NAME
    try:
        return write_task(raw_data_base, task_id, name, training, test, labels_out, modality=modality,
                          description=f"converted by reisoseg from {', '.join(map(str, images))}",
                          overwrite=overwrite, engine=engine,
                          instance_class=None if instance_class is None else names.index(instance_class) + 1)
    except FileExistsError as error:
        raise ReIsoSegError(str(error)) from error


def check_task(folder: str | os.PathLike) -> dict[str, object]:
    """Validate a raw task made by hand (before nnUNet_plan_and_preprocess); returns counts, warnings and the
    fraction of training voxels that are annotated (not `ignore`)."""
    import json

    from reisoseg.io.nifti import read_nifti

    folder = Path(folder)
    dataset_file = folder / "dataset.json"
    if not dataset_file.is_file():
        raise ReIsoSegError(f"{dataset_file}: missing")
    try:
        dataset = json.loads(dataset_file.read_text())
    except json.JSONDecodeError as error:
        raise ReIsoSegError(f"{dataset_file}: not valid JSON ({error.msg}, line {error.lineno})") from error
    for key in ("modality", "labels", "training", "test"):
        if key not in dataset:
            raise ReIsoSegError(f"{dataset_file}: no {key!r} entry")
    declared = {int(k) for k in dataset["labels"]}
    ignore = ignore_label(dataset["labels"], str(dataset_file))
    annotated = total = 0
    modalities = sorted(int(k) for k in dataset["modality"])
    warnings: list[str] = []
    for entry in dataset["training"]:
        case = Path(entry["image"]).name[:-len(".nii.gz")]
        label_path = folder / "labelsTr" / f"{case}.nii.gz"
        if not label_path.is_file():
            raise ReIsoSegError(f"{label_path}: missing (listed in dataset.json)")
        labels, label_spacing = read_nifti(label_path)
        check_labels(str(label_path), labels, declared)
        annotated += labels.size if ignore is None else int(np.count_nonzero(labels != ignore))
        total += labels.size
        for modality in modalities:
            image_path = folder / "imagesTr" / f"{case}_{modality:04d}.nii.gz"
            if not image_path.is_file():
                raise ReIsoSegError(f"{image_path}: missing (listed in dataset.json)")
            image, spacing = read_nifti(image_path)
            check_same_shape(str(image_path), image.shape, str(label_path), labels.shape)
            check_image(str(image_path), image)
            resolve_spacing(str(image_path), spacing, None)
            if not np.allclose(spacing, label_spacing, rtol=0.01):
                raise ReIsoSegError(f"{label_path}: spacing {list(label_spacing)} differs from the image's "
                                    f"{list(spacing)}")
            warning = z_axis_warning(str(image_path), spacing)
            if warning:
                warnings.append(warning)
    return {"training": len(dataset["training"]), "test": len(dataset["test"]), "warnings": warnings,
            "annotated_fraction": annotated / max(total, 1)}
