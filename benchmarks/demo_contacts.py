"""Touching mitochondria in the synthetic volumes: where they touch, what the image shows there, and what that allows.

For the demo's volumes (training: generator seeds 0-5, test: 6-7, and the validation volumes it calibrates its
decoding on, as `reisoseg demo` makes them) and the test volumes of the quality benchmark's synthetic datasets
(ratios 4 and 8, as quality.py makes them), per set:
- touching pairs of objects, and their shared faces as voxel pairs across sections (z) and within sections (y, x);
- the mean image intensity at z-contact voxels (two different objects on adjacent sections), at in-plane contact
  voxels, deep inside objects (no background or other object within 2 px in-plane, no contact) and in background;
- per touching pair, its contact contrast: the mean intensity of the pair's deep voxels minus that of its contact
  voxels; a pair whose contrast is at most `HIDDEN_CONTRAST` times the deep voxels' standard deviation has an interface
  that the image hides;
- two ceilings, the scores of a "prediction" equal to the reference mask and objects except that groups of objects
  are one object: `ceiling_hidden_interfaces_merged` joins the pairs whose interface is hidden (a perfect
  segmentation that splits every interface the image shows); `ceiling_touching_objects_merged` joins every touching
  pair (one that cannot split touching objects at all).
Writes benchmarks/results/demo_contacts.json. Takes a minute or two; needs no model.

With `--model DEMO_OUTPUT` (a folder `reisoseg demo` trained in) it asks instead which touching pairs of the demo's
test and validation volumes that model keeps apart: it segments each volume as the demo predicts (no mirroring, the
model's calibrated decoding) and, per touching pair, whether the two objects' most-overlapping predicted objects
differ; with the mean interior and boundary probabilities at the pair's contact and inside it, and how the
decoding's seeds lie in the pair (one seed in both, one object without a seed, or a seed each). Adds the model's
entry to benchmarks/results/demo_contacts_model.json (replacing an earlier one for the same folder).

    python benchmarks/demo_contacts.py [--model DEMO_OUTPUT]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import reisoseg
from reisoseg.demo import FOLD, DemoSettings, demo_model_folder, validation_seeds
from reisoseg.inference.store import LABELS, PROBABILITIES
from reisoseg.instances.decode import components, seed_mask
from reisoseg.instances.target import InstanceSettings, model_instance_settings
from reisoseg.synthetic.generator import CLASSES, generate_volume
from reisoseg.synthetic.task import volume_seed

sys.path.insert(0, str(Path(__file__).parent))
import quality  # noqa: E402

RECORD = Path(__file__).parent / "results" / "demo_contacts.json"
MODEL_RECORD = Path(__file__).parent / "results" / "demo_contacts_model.json"
MODEL_SETS = ("test", "validation")  # the demo's volumes that its model was not trained on
HIDDEN_CONTRAST = 0.25  # contact contrast, in standard deviations of the deep voxels, below which an interface hides


def _set(shape: tuple[int, ...], ratio: int, seeds: list[int]) -> dict:
    return {"shape": tuple(shape), "ratio": ratio, "seeds": seeds}


def volume_sets() -> dict[str, dict]:
    """Per set: the shape, ratio and generator seeds of its volumes (a task's, as its writer derives them)."""
    demo = DemoSettings()
    demo_seeds = [volume_seed(demo.seed, index) for index in range(demo.num_training + demo.num_test)]
    sets = {"training": _set(demo.shape, demo.ratio, demo_seeds[:demo.num_training]),
            "test": _set(demo.shape, demo.ratio, demo_seeds[demo.num_training:]),
            "validation": _set(demo.shape, demo.ratio, validation_seeds(demo))}
    test_indices = range(quality.SYNTH_TRAINING, quality.SYNTH_TRAINING + quality.SYNTH_TEST)
    for ratio in (4, 8):
        task_seed = quality.synthetic_task_seed(ratio)
        sets[f"quality_synth{ratio}_test"] = _set(quality.SYNTH_SHAPES[ratio], ratio,
                                                  [volume_seed(task_seed, index) for index in test_indices])
    return sets


def _faces(ids: np.ndarray, axis: int) -> np.ndarray:
    """Faces between two different objects along `axis`: True at [i] where voxels i and i + 1 touch (axis first)."""
    moved = np.moveaxis(ids, axis, 0)
    after, before = moved[1:], moved[:-1]
    return (after > 0) & (before > 0) & (after != before)


def _contacts(ids: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxels of two different objects adjacent along `axis`: a mask of both sides, and the id pairs."""
    moved = np.moveaxis(ids, axis, 0)
    touching = _faces(ids, axis)
    mask = np.zeros(moved.shape, bool)
    mask[1:] |= touching
    mask[:-1] |= touching
    return np.moveaxis(mask, 0, axis), moved[1:][touching], moved[:-1][touching]


def _deep(ids: np.ndarray, z_contacts: np.ndarray) -> np.ndarray:
    """Object voxels with only their own object within 2 px in-plane (beyond the volume counts as background) and no
    z-contact."""
    window = (1, 5, 5)
    return (ids > 0) & (ndimage.minimum_filter(ids, window, mode="constant") == ids) & \
        (ndimage.maximum_filter(ids, window, mode="constant") == ids) & ~z_contacts


def _analyse(ids: np.ndarray, image: np.ndarray) -> dict:
    faces: dict[tuple[int, int], list[int]] = {}
    contact_sums: dict[tuple[int, int], list[float]] = {}
    masks = []
    for axis in range(3):
        mask, first, second = _contacts(ids, axis)
        masks.append(mask)
        pairs, counts = np.unique(np.sort(np.stack([first, second]), axis=0), axis=1, return_counts=True)
        for pair, count in zip(pairs.T, counts):
            faces.setdefault(tuple(int(v) for v in pair), [0, 0, 0])[axis] += int(count)
        moved_image = np.moveaxis(image, axis, 0)
        pair_of_face = np.sort(np.stack([first, second]), axis=0)
        touching = _faces(ids, axis)
        face_intensity = (moved_image[1:][touching] + moved_image[:-1][touching]) / 2
        for (a, b), value in zip(pair_of_face.T, face_intensity):
            total = contact_sums.setdefault((int(a), int(b)), [0.0, 0.0])
            total[0] += float(value)
            total[1] += 1.0
    in_plane = masks[1] | masks[2]
    deep = _deep(ids, masks[0])
    spread = float(image[deep].std()) if deep.any() else 0.0

    def mean(mask: np.ndarray) -> float | None:
        return round(float(image[mask].mean()), 1) if mask.any() else None

    pairs = {}
    for (a, b), f in sorted(faces.items()):
        inner = deep & np.isin(ids, (a, b))
        contrast = float(image[inner].mean()) - contact_sums[(a, b)][0] / contact_sums[(a, b)][1] \
            if inner.any() else None
        pairs[f"{a}-{b}"] = {"faces_across_sections": f[0], "faces_in_plane": f[1] + f[2],
                             "contrast": None if contrast is None else round(contrast, 1),
                             "hidden": contrast is None or contrast <= HIDDEN_CONTRAST * spread}
    return {"objects": int(len(np.unique(ids[ids > 0]))), "touching_pairs": pairs,
            "deep_standard_deviation": round(spread, 1),
            "intensity": {"z_contacts": mean(masks[0]), "in_plane_contacts": mean(in_plane), "inside": mean(deep),
                          "background": mean(ids == 0)}}


def _groups_merged(ids: np.ndarray, joined: set[tuple[int, int]] | None = None) -> np.ndarray:
    """Objects joined along touching pairs (all of them, or only those in `joined`) into one object each."""
    rows, cols = [], []
    for axis in range(3):
        _, first, second = _contacts(ids, axis)
        if joined is not None:
            keep = np.array([(min(a, b), max(a, b)) in joined for a, b in zip(first.tolist(), second.tolist())],
                            bool)
            first, second = first[keep], second[keep]
        rows.append(first)
        cols.append(second)
    size = int(ids.max()) + 1
    graph = coo_matrix((np.ones(sum(map(len, rows))), (np.concatenate(rows), np.concatenate(cols))), (size, size))
    group = connected_components(graph, directed=False)[1]
    return np.where(ids > 0, group[ids] + 1, 0).astype(np.uint32)


def _pair_ids(key: str) -> tuple[int, int]:
    """The object ids of a pair's record key "A-B"."""
    first, second = key.split("-")
    return int(first), int(second)


def _hidden_pairs(found: dict) -> set[tuple[int, int]]:
    """The touching pairs of one case's analysis whose interface the image hides."""
    return {_pair_ids(pair) for pair, values in found["touching_pairs"].items() if values["hidden"]}


def _ceiling(volumes: dict[str, tuple[np.ndarray, tuple[float, ...]]],
             joined: dict[str, set[tuple[int, int]] | None]) -> dict:
    """Scores of the reference objects with each case's `joined` pairs (None: every touching pair) merged."""
    from reisoseg.evaluation.report import evaluate
    from reisoseg.io.nifti import write_nifti

    with tempfile.TemporaryDirectory() as scratch:
        folders = {name: Path(scratch) / name for name in ("labels", "reference", "merged")}
        for folder in folders.values():
            folder.mkdir()
        for case, (ids, spacing) in volumes.items():
            write_nifti(folders["labels"] / f"{case}.nii.gz", (ids > 0).astype(np.uint8), spacing)
            write_nifti(folders["reference"] / f"{case}.nii.gz", ids.astype(np.uint32), spacing)
            write_nifti(folders["merged"] / f"{case}.nii.gz", _groups_merged(ids, joined[case]), spacing)
        scores = evaluate(folders["labels"], folders["labels"], classes={1: "mitochondria"}, instance_classes=(1,),
                          reference_instances=folders["reference"], prediction_instances=folders["merged"])
    mean = scores["mean"]["mitochondria"]
    return {key: round(float(mean[key]), 3) for key in ("f1_50", "ap_50", "ap_75", "predicted_instances",
                                                          "reference_instances", "merges")}


def _main_object(ids: np.ndarray, predicted: np.ndarray, object_id: int) -> int | None:
    """The predicted object that overlaps reference object `object_id` most (None: it was missed)."""
    found = predicted[(ids == object_id) & (predicted > 0)]
    return int(np.bincount(found).argmax()) if found.size else None


def kept_apart(ids: np.ndarray, predicted: np.ndarray, pairs: list[tuple[int, int]]) -> dict[str, bool | None]:
    """Per pair of reference objects: whether their most-overlapping predicted objects differ (None: one was
    missed)."""
    apart = {}
    for a, b in pairs:
        first, second = _main_object(ids, predicted, a), _main_object(ids, predicted, b)
        apart[f"{a}-{b}"] = None if first is None or second is None else first != second
    return apart


def _generated(chosen: dict) -> dict:
    """Per case of a set: its generated volume and its mitochondria's ids."""
    volumes = {}
    for seed in chosen["seeds"]:
        volume = generate_volume(chosen["shape"], chosen["ratio"], seed=seed)
        volumes[f"seed_{seed}"] = (volume, np.where(volume.labels == CLASSES["mitochondria"], volume.instances,
                                                    0).astype(np.int64))
    return volumes


def pair_contact(ids: np.ndarray, first: int, second: int) -> np.ndarray:
    """Voxels of either object that face the other along any axis."""
    pair = np.where(np.isin(ids, (first, second)), ids, 0)
    return np.logical_or.reduce([_contacts(pair, axis)[0] for axis in range(3)])


def seeding(ids: np.ndarray, seed_components: np.ndarray, first: int, second: int) -> str:
    """How the decoding's seeds lie in a pair of objects: "shared" (one seed reaches into both), "unseeded" (one
    holds no seed of its own, so a neighbour's seed floods it), or "separate"."""
    seeds = [set(np.unique(seed_components[ids == object_id]).tolist()) - {0} for object_id in (first, second)]
    if seeds[0] & seeds[1]:
        return "shared"
    return "separate" if all(seeds) else "unseeded"


def _pair_details(ids: np.ndarray, probabilities: np.ndarray, seed_components: np.ndarray, first: int,
                  second: int, settings: InstanceSettings) -> dict:
    """Mean interior and boundary probabilities at the pair's contact and inside the pair, the fraction of the contact
    that is seed, and the pair's seeding."""
    contact = pair_contact(ids, first, second)
    inside = np.isin(ids, (first, second)) & ~contact

    def mean(channel: int, mask: np.ndarray) -> float:
        return round(float(probabilities[channel][mask].mean()), 2)

    return {"contact_interior": mean(settings.instance_class, contact),
            "contact_boundary": mean(settings.boundary_class, contact),
            "inside_interior": mean(settings.instance_class, inside),
            "inside_boundary": mean(settings.boundary_class, inside),
            "contact_seed_fraction": round(float((seed_components[contact] > 0).mean()), 3),
            "seeding": seeding(ids, seed_components, first, second)}


def model_contacts(demo_output: Path) -> dict:
    """Which touching pairs of the demo's test and validation volumes the demo's model keeps apart (module doc)."""
    model, settings = demo_model_folder(demo_output), DemoSettings()
    decoding = model_instance_settings(model)
    record = {"date": date.today().isoformat(), "demo_output": str(demo_output), "decoding": decoding.to_dict(),
              "sets": {}}
    for name in MODEL_SETS:
        cases = {}
        for case, (volume, ids) in _generated(volume_sets()[name]).items():
            found = _analyse(ids, volume.image.astype(np.float32))
            with tempfile.TemporaryDirectory() as scratch:
                output = reisoseg.segment(volume.image, volume.spacing, model, Path(scratch) / "case.zarr",
                                          folds=[FOLD], instances=True, probabilities=True, tta=False,
                                          step_size=settings.step_size, progress=False)
                predicted = zarr.open_array(str(Path(output) / LABELS), mode="r")[...]
                probabilities = zarr.open_array(str(Path(output) / PROBABILITIES), mode="r")[...].astype(np.float32)
            seed_components = components(seed_mask(probabilities, decoding, volume.spacing))
            pairs = [_pair_ids(pair) for pair in found["touching_pairs"]]
            apart = kept_apart(ids, predicted, pairs)
            cases[case] = {f"{a}-{b}": {**found["touching_pairs"][f"{a}-{b}"], "kept_apart": apart[f"{a}-{b}"],
                                        **_pair_details(ids, probabilities, seed_components, a, b, decoding)}
                           for a, b in pairs}
        rows = [values for pairs in cases.values() for values in pairs.values()]
        merged = [row for row in rows if row["kept_apart"] is False]
        record["sets"][name] = {"cases": cases, "touching_pairs": len(rows),
                                "kept_apart": sum(row["kept_apart"] is True for row in rows),
                                "merged": len(merged),
                                "merged_by_seeding": {kind: sum(row["seeding"] == kind for row in merged)
                                                      for kind in ("shared", "unseeded", "separate")},
                                "one_missed": sum(row["kept_apart"] is None for row in rows)}
        print(f"{name}: {({k: v for k, v in record['sets'][name].items() if k != 'cases'})}", flush=True)
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, metavar="DEMO_OUTPUT",
                        help="a folder `reisoseg demo` trained in: which touching pairs its model keeps apart")
    arguments = parser.parse_args()
    if arguments.model is not None:
        measured = model_contacts(arguments.model)
        models = json.loads(MODEL_RECORD.read_text())["models"] if MODEL_RECORD.is_file() else []
        models = [entry for entry in models if entry["demo_output"] != measured["demo_output"]] + [measured]
        MODEL_RECORD.write_text(json.dumps({"models": models}, indent=1))
        print(f"-> {MODEL_RECORD} ({len(models)} models)")
        return
    record = {"sets": {}}
    for name, chosen in volume_sets().items():
        volumes, cases = {}, {}
        for case, (volume, ids) in _generated(chosen).items():
            volumes[case] = (ids, tuple(float(s) for s in volume.spacing))
            cases[case] = _analyse(ids, volume.image.astype(np.float32))
        everything = {kind: [c["intensity"][kind] for c in cases.values() if c["intensity"][kind] is not None]
                      for kind in ("z_contacts", "in_plane_contacts", "inside", "background")}
        record["sets"][name] = {
            "shape": list(chosen["shape"]), "ratio": chosen["ratio"], "seeds": chosen["seeds"], "cases": cases,
            "mean_intensity_over_cases": {k: round(float(np.mean(v)), 1) if v else None for k, v in everything.items()},
            "ceiling_hidden_interfaces_merged": _ceiling(volumes, {case: _hidden_pairs(found)
                                                                   for case, found in cases.items()}),
            "ceiling_touching_objects_merged": _ceiling(volumes, dict.fromkeys(volumes))}
        summary = record["sets"][name]
        hidden = sum(len(_hidden_pairs(c)) for c in cases.values())
        print(f"{name}: {sum(c['objects'] for c in cases.values())} objects, "
              f"{sum(len(c['touching_pairs']) for c in cases.values())} touching pairs ({hidden} hidden); mean "
              f"intensity {summary['mean_intensity_over_cases']}; "
              f"ceiling {summary['ceiling_hidden_interfaces_merged']}",
              flush=True)
    RECORD.write_text(json.dumps(record, indent=1))
    print(f"-> {RECORD}")


if __name__ == "__main__":
    sys.exit(main())
