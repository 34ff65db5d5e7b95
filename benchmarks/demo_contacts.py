"""Why the demo's touching mitochondria merge (issue #10): where they touch, and what the image shows there.

For the demo's volumes (training: generator seeds 0-5, test: 6-7, as `reisoseg demo` makes them), the four
validation volumes used to choose its settings (seeds 100-103, documentation/instances.md) and the test volumes of
the quality benchmark's synthetic datasets (ratios 4 and 8, as quality.py makes them), per set:
- touching pairs of objects, and their shared faces as voxel pairs across sections (z) and within sections (y, x);
- the mean image intensity at z-contact voxels (two different objects on adjacent sections), at in-plane contact
  voxels, deep inside objects (no background or other object within 2 px in-plane, no contact) and in background;
- a ceiling: the scores of a "prediction" equal to the reference mask and objects except that every group of
  touching objects is one object, i.e. a perfect segmentation that cannot split touching objects.
Writes benchmarks/results/demo_contacts.json. Takes a minute or two; needs no model.

    python benchmarks/demo_contacts.py
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from reisoseg.demo import DemoSettings
from reisoseg.synthetic.generator import CLASSES, generate_volume
from reisoseg.synthetic.task import volume_seed

sys.path.insert(0, str(Path(__file__).parent))
import quality  # noqa: E402

RECORD = Path(__file__).parent / "results" / "demo_contacts.json"


def _set(shape: tuple[int, ...], ratio: int, seeds: list[int]) -> dict:
    return {"shape": tuple(shape), "ratio": ratio, "seeds": seeds}


def volume_sets() -> dict[str, dict]:
    """Per set: the shape, ratio and generator seeds of its volumes (a task's, as its writer derives them)."""
    demo = DemoSettings()
    demo_seeds = [volume_seed(demo.seed, index) for index in range(demo.num_training + demo.num_test)]
    sets = {"training": _set(demo.shape, demo.ratio, demo_seeds[:demo.num_training]),
            "test": _set(demo.shape, demo.ratio, demo_seeds[demo.num_training:]),
            "validation": _set(demo.shape, demo.ratio, list(range(100, 104)))}  # fresh volumes, in no task
    test_indices = range(quality.SYNTH_TRAINING, quality.SYNTH_TRAINING + quality.SYNTH_TEST)
    for ratio in (4, 8):
        task_seed = quality.synthetic_task_seed(ratio)
        sets[f"quality_synth{ratio}_test"] = _set(quality.SYNTH_SHAPES[ratio], ratio,
                                                  [volume_seed(task_seed, index) for index in test_indices])
    return sets


def _contacts(ids: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels of two different objects adjacent along `axis`: a mask of both sides, and the id pairs."""
    moved = np.moveaxis(ids, axis, 0)
    after, before = moved[1:], moved[:-1]
    touching = (after > 0) & (before > 0) & (after != before)
    mask = np.zeros(moved.shape, bool)
    mask[1:] |= touching
    mask[:-1] |= touching
    return np.moveaxis(mask, 0, axis), after[touching], before[touching]


def _analyse(ids: np.ndarray, image: np.ndarray) -> dict:
    faces: dict[tuple[int, int], list[int]] = {}
    masks = []
    for axis in range(3):
        mask, first, second = _contacts(ids, axis)
        masks.append(mask)
        pairs, counts = np.unique(np.sort(np.stack([first, second]), axis=0), axis=1, return_counts=True)
        for pair, count in zip(pairs.T, counts):
            faces.setdefault(tuple(int(v) for v in pair), [0, 0, 0])[axis] += int(count)
    in_plane = masks[1] | masks[2]
    # deep: only the voxel's own object within 2 px in-plane (beyond the volume counts as background), no z-contact
    window = (1, 5, 5)
    deep = (ids > 0) & (ndimage.minimum_filter(ids, window, mode="constant") == ids) & \
        (ndimage.maximum_filter(ids, window, mode="constant") == ids) & ~masks[0]

    def mean(mask: np.ndarray) -> float | None:
        return round(float(image[mask].mean()), 1) if mask.any() else None

    return {"objects": int(len(np.unique(ids[ids > 0]))),
            "touching_pairs": {f"{a}-{b}": {"faces_across_sections": f[0], "faces_in_plane": f[1] + f[2]}
                               for (a, b), f in sorted(faces.items())},
            "intensity": {"z_contacts": mean(masks[0]), "in_plane_contacts": mean(in_plane), "inside": mean(deep),
                          "background": mean(ids == 0)}}


def _touching_groups_merged(ids: np.ndarray) -> np.ndarray:
    rows, cols = [], []
    for axis in range(3):
        _, first, second = _contacts(ids, axis)
        rows.append(first)
        cols.append(second)
    size = int(ids.max()) + 1
    graph = coo_matrix((np.ones(sum(map(len, rows))), (np.concatenate(rows), np.concatenate(cols))), (size, size))
    group = connected_components(graph, directed=False)[1]
    return np.where(ids > 0, group[ids] + 1, 0).astype(np.uint32)


def _ceiling(volumes: dict[str, tuple[np.ndarray, tuple[float, ...]]]) -> dict:
    from reisoseg.evaluation.report import evaluate
    from reisoseg.io.nifti import write_nifti

    with tempfile.TemporaryDirectory() as scratch:
        folders = {name: Path(scratch) / name for name in ("labels", "reference", "merged")}
        for folder in folders.values():
            folder.mkdir()
        for case, (ids, spacing) in volumes.items():
            write_nifti(folders["labels"] / f"{case}.nii.gz", (ids > 0).astype(np.uint8), spacing)
            write_nifti(folders["reference"] / f"{case}.nii.gz", ids.astype(np.uint32), spacing)
            write_nifti(folders["merged"] / f"{case}.nii.gz", _touching_groups_merged(ids), spacing)
        scores = evaluate(folders["labels"], folders["labels"], classes={1: "mitochondria"}, instance_classes=(1,),
                          reference_instances=folders["reference"], prediction_instances=folders["merged"])
    mean = scores["mean"]["mitochondria"]
    return {key: round(float(mean[key]), 3) for key in ("f1_50", "ap_50", "ap_75", "predicted_instances",
                                                          "reference_instances", "merges")}


def main() -> None:
    record = {"sets": {}}
    for name, chosen in volume_sets().items():
        volumes, cases = {}, {}
        for seed in chosen["seeds"]:
            volume = generate_volume(chosen["shape"], chosen["ratio"], seed=seed)
            ids = np.where(volume.labels == CLASSES["mitochondria"], volume.instances, 0).astype(np.int64)
            volumes[f"seed_{seed}"] = (ids, tuple(float(s) for s in volume.spacing))
            cases[f"seed_{seed}"] = _analyse(ids, volume.image.astype(np.float32))
        everything = {kind: [c["intensity"][kind] for c in cases.values() if c["intensity"][kind] is not None]
                      for kind in ("z_contacts", "in_plane_contacts", "inside", "background")}
        record["sets"][name] = {
            "shape": list(chosen["shape"]), "ratio": chosen["ratio"], "seeds": chosen["seeds"], "cases": cases,
            "mean_intensity_over_cases": {k: round(float(np.mean(v)), 1) if v else None for k, v in everything.items()},
            "ceiling_touching_objects_merged": _ceiling(volumes)}
        summary = record["sets"][name]
        print(f"{name}: {sum(c['objects'] for c in cases.values())} objects, "
              f"{sum(len(c['touching_pairs']) for c in cases.values())} touching pairs; mean intensity "
              f"{summary['mean_intensity_over_cases']}; ceiling {summary['ceiling_touching_objects_merged']}",
              flush=True)
    RECORD.write_text(json.dumps(record, indent=1))
    print(f"-> {RECORD}")


if __name__ == "__main__":
    sys.exit(main())
