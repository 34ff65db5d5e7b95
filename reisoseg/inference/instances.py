"""Blockwise instance decoding: the objects of `reisoseg.instances.decode` on a volume of any size.

After the semantic pass has written every block's probabilities, four passes follow, each resumable on its own
(`BlockStore` markers per pass) and each a set of independent block tasks:

1. seeds: each block labels its seed components (6-connected, local ids 1..n; n goes in the block's marker);
2. merge: seeds that touch across a block face are one seed. With 6-connectivity, faces are all that matter (edges
   and corners follow transitively); the pairs found on every face form a graph whose connected components
   (scipy) are the global seed ids;
3. objects: each block floods its global seeds over its core plus a halo of context, keeps the core, and reports
   each object's voxel count and foreground-probability sum; it floods again with half the halo and reports how
   many core voxels change object (the halo check);
4. relabel: objects below the minimum volume (whole-volume counts) are dropped and the rest renumbered 1..N.

Ids are global by construction, so no object is cut at a block face. The watershed landscape is local, so a core
voxel gets the whole-volume result whenever the flooding that reaches it stays inside the halo; the default halo
is many times the boundary width the network is trained on. Where the boundary map is flat (a model early in
training), the watershed's tie order carries further than any halo; then halving the halo moves voxels between
objects, and `halo_warning` says so. No change is evidence, not proof, that the full halo suffices.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from reisoseg.inference.store import LABELS, PROBABILITIES, BlockStore, block_name
from reisoseg.inference.tiles import block_box, block_counts, block_indices, box_slices
from reisoseg.instances.decode import (
    components,
    erosion_margin,
    foreground_probability,
    grow,
    kept_objects,
    object_sums,
    seed_mask,
)
from reisoseg.instances.target import InstanceSettings

SEMANTIC, SEEDS, OBJECTS = "semantic", "seeds", "objects"
ARRAYS = {SEMANTIC: "uint8", LABELS: "uint32", SEEDS: "uint32", OBJECTS: "uint32"}
INTERMEDIATE = (SEEDS, OBJECTS)
DEFAULT_HALO = (4, 32, 32)
HALO_TOLERANCE = 1e-3  # fraction of object voxels the halo check may move without a warning: float16 ties between
# touching objects move 0.005-0.04 % on a trained-like landscape where blockwise equals whole-volume decoding
_WORK = ".instances"  # seed and object lookup tables (removed when the run completes)


@dataclass(frozen=True)
class InstanceJob:
    """What each instance task needs (small and picklable)."""

    output: str  # the BlockStore target
    shape: tuple[int, int, int]
    block: tuple[int, int, int]
    spacing: tuple[float, float, float]
    settings: InstanceSettings
    halo: tuple[int, int, int] = DEFAULT_HALO

    def store(self) -> BlockStore:
        return BlockStore(self.output)

    def work(self) -> Path:
        return self.store().partial / _WORK

    def indices(self) -> list[tuple[int, int, int]]:
        return block_indices(self.shape, self.block)

    def counts(self) -> tuple[int, ...]:
        return block_counts(self.shape, self.block)


def _probabilities(store: BlockStore, box: Sequence[tuple[int, int]]) -> np.ndarray:
    return np.asarray(store.array(PROBABILITIES)[(slice(None), *box_slices(box))])


def _context(box: Sequence[tuple[int, int]], margin: Sequence[int], shape: Sequence[int]) -> list[tuple[int, int]]:
    return [(max(0, lo - m), min(s, hi + m)) for (lo, hi), m, s in zip(box, margin, shape)]


def seed_block(job: InstanceJob, index: tuple[int, int, int]) -> int:
    """Pass 1: local seed ids of one block (its seed mask computed with the context the erosion needs); the marker
    records how many."""
    store = job.store()
    box = block_box(index, job.shape, job.block)
    region = _context(box, erosion_margin(job.settings, job.spacing), job.shape)
    mask = seed_mask(_probabilities(store, region), job.settings, job.spacing)
    seeds = components(mask[box_slices(box, [-lo for lo, _ in region])])
    store.array(SEEDS)[box_slices(box)] = seeds
    store.mark_finished(index, SEEDS, str(int(seeds.max())))
    return seeds.size


def _face_pairs(job: InstanceJob, seeds: Any, offsets: np.ndarray, index: tuple[int, int, int]) -> np.ndarray:
    """(node, node) pairs of seeds touching across this block's three upper faces."""
    counts = job.counts()
    box = block_box(index, job.shape, job.block)
    pairs = [np.zeros((0, 2), np.int64)]
    for axis in range(3):
        if index[axis] + 1 >= counts[axis]:
            continue
        neighbour = tuple(i + (a == axis) for a, i in enumerate(index))
        plane = [slice(lo, hi) for lo, hi in box]
        plane[axis] = slice(box[axis][1] - 1, box[axis][1])
        mine = np.asarray(seeds[tuple(plane)]).ravel().astype(np.int64)
        plane[axis] = slice(box[axis][1], box[axis][1] + 1)
        theirs = np.asarray(seeds[tuple(plane)]).ravel().astype(np.int64)
        both = (mine > 0) & (theirs > 0)
        here = offsets[np.ravel_multi_index(index, counts)] + mine[both]
        there = offsets[np.ravel_multi_index(neighbour, counts)] + theirs[both]
        pairs.append(np.unique(np.stack([here, there], 1), axis=0))
    return np.concatenate(pairs)


def merge_seeds(job: InstanceJob) -> None:
    """Pass 2: global seed ids (`seed_ids.npy`: node -> id, node = block offset + local id)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    store, work = job.store(), job.work()
    if (work / "seed_ids.npy").is_file():
        return
    local = [int(store.marker(index, SEEDS)) for index in job.indices()]  # block order = ravel order
    offsets = np.concatenate([[0], np.cumsum(local)[:-1]]).astype(np.int64)
    nodes = int(sum(local)) + 1  # node 0: no seed
    seeds = store.array(SEEDS)
    pairs = np.concatenate([_face_pairs(job, seeds, offsets, index) for index in job.indices()])
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(nodes, nodes))
    _, component = connected_components(graph, directed=False)
    ids = (component + 1).astype(np.uint32)
    ids[0] = 0
    work.mkdir(exist_ok=True)
    _save(work / "seed_offsets.npy", offsets)
    _save(work / "seed_ids.npy", ids)


def _save(path: Path, values: np.ndarray) -> None:
    from reisoseg.io.atomic import atomic_file

    with atomic_file(path) as temporary:
        with open(temporary, "wb") as handle:
            np.save(handle, values)


def _global_seeds(job: InstanceJob, store: BlockStore, region: Sequence[tuple[int, int]]) -> np.ndarray:
    """Global seed ids over `region`, assembled from the blocks it overlaps."""
    offsets, ids = np.load(job.work() / "seed_offsets.npy"), np.load(job.work() / "seed_ids.npy")
    seeds, counts = store.array(SEEDS), job.counts()
    out = np.zeros([hi - lo for lo, hi in region], np.uint32)
    first = [lo // b for (lo, _), b in zip(region, job.block)]
    last = [(hi - 1) // b for (_, hi), b in zip(region, job.block)]
    for index in np.ndindex(*[b - a + 1 for a, b in zip(first, last)]):
        index = tuple(i + a for i, a in zip(index, first))
        box = block_box(index, job.shape, job.block)
        part = [(max(lo, rlo), min(hi, rhi)) for (lo, hi), (rlo, rhi) in zip(box, region)]
        local = np.asarray(seeds[box_slices(part)]).astype(np.int64)
        node = np.where(local > 0, offsets[np.ravel_multi_index(index, counts)] + local, 0)
        out[box_slices(part, [-lo for lo, _ in region])] = ids[node]
    return out


def object_block(job: InstanceJob, index: tuple[int, int, int]) -> int:
    """Pass 3: flood one block's core with context; the marker holds its objects' counts and score sums, and how
    many core voxels change object with half the halo."""
    store = job.store()
    box = block_box(index, job.shape, job.block)
    region = _context(box, job.halo, job.shape)
    probabilities = _probabilities(store, region)
    seeds = _global_seeds(job, store, region)
    labels = grow(probabilities, seeds, job.settings)
    core = box_slices(box, [-lo for lo, _ in region])
    labels, foreground = labels[core], foreground_probability(probabilities[(slice(None), *core)], job.settings)
    store.array(OBJECTS)[box_slices(box)] = labels
    ids, counts, sums = object_sums(labels, foreground)
    store.mark_finished(index, OBJECTS, json.dumps({
        "ids": ids.tolist(), "counts": counts.tolist(), "sums": sums.tolist(),
        "halo_sensitive": _halo_sensitive_voxels(job, box, region, probabilities, seeds, labels)}))
    return labels.size


def _halo_sensitive_voxels(job: InstanceJob, box: Sequence[tuple[int, int]], region: Sequence[tuple[int, int]],
                           probabilities: np.ndarray, seeds: np.ndarray, labels: np.ndarray) -> int:
    """Core voxels whose object differs when the block is flooded with half the halo (0 where halving changes no
    context)."""
    half = _context(box, [h // 2 for h in job.halo], job.shape)
    if half == region:
        return 0
    inside = box_slices(half, [-lo for lo, _ in region])
    flooded = grow(probabilities[(slice(None), *inside)], seeds[inside], job.settings)
    return int(np.count_nonzero(flooded[box_slices(box, [-lo for lo, _ in half])] != labels))


def _object_records(job: InstanceJob) -> list[dict]:
    """Every block's pass-3 marker: its objects' ids, voxel counts and score sums, and its halo check."""
    store = job.store()
    return [json.loads(store.marker(index, OBJECTS)) for index in job.indices()]


def halo_warning(job: InstanceJob, records: list[dict]) -> str | None:
    """A warning when the halo check (pass 3, `records`) moved more than `HALO_TOLERANCE` of the objects' voxels."""
    sensitive = [record.get("halo_sensitive", 0) for record in records]  # 0: a pass begun before the check existed
    labelled = sum(sum(record["counts"]) for record in records)
    if sum(sensitive) <= HALO_TOLERANCE * labelled:
        return None
    most, worst = max(zip(sensitive, job.indices()))
    where = ", ".join(f"{axis} {lo}-{hi}" for axis, (lo, hi) in zip("zyx", block_box(worst, job.shape, job.block)))
    return (f"{sum(sensitive)} voxels ({100 * sum(sensitive) / labelled:.2g} % of the objects') in "
            f"{sum(map(bool, sensitive))} of {len(records)} blocks changed object when the instance halo "
            f"{' x '.join(map(str, job.halo))} was halved (most, {most}, in the block at {where}): the boundary map "
            f"is flat there (a model early in training?), so objects may differ from whole-volume decoding; a larger "
            f"--instance_halo narrows the gap")


def final_ids(job: InstanceJob, records: list[dict]) -> dict[int, float]:
    """Whole-volume counts from the pass-3 markers (`records`); writes `object_ids.npy` (global id -> final id, 0 if
    dropped) and returns each final object's score."""
    counts: dict[int, int] = {}
    sums: dict[int, float] = {}
    for record in records:
        for i, c, s in zip(record["ids"], record["counts"], record["sums"]):
            counts[i] = counts.get(i, 0) + c
            sums[i] = sums.get(i, 0.0) + s
    ids = np.array(sorted(counts), np.int64)
    total = np.array([counts[i] for i in ids], np.int64)
    scores = np.array([sums[i] / counts[i] for i in ids])
    passed = kept_objects(total, scores, job.settings, job.spacing)
    kept = ids[passed].tolist()
    size = len(np.load(job.work() / "seed_ids.npy"))
    lookup = np.zeros(max(size, max(counts, default=0) + 1), np.uint32)
    lookup[kept] = np.arange(1, len(kept) + 1, dtype=np.uint32)
    if not (job.work() / "object_ids.npy").is_file():
        _save(job.work() / "object_ids.npy", lookup)
    return {new: float(score) for new, score in enumerate(scores[passed], start=1)}


def relabel_block(job: InstanceJob, index: tuple[int, int, int]) -> int:
    """Pass 4: final ids of one block (read from the objects array, so a repeated block writes the same)."""
    store = job.store()
    box = block_box(index, job.shape, job.block)
    lookup = np.load(job.work() / "object_ids.npy")
    store.array(LABELS)[box_slices(box)] = lookup[np.asarray(store.array(OBJECTS)[box_slices(box)])]
    store.mark_finished(index, "relabel")
    return math.prod(hi - lo for lo, hi in box)


def decode_blockwise(job: InstanceJob, run: Callable[[Callable, Any, list, str], None]) -> dict[int, float]:
    """Passes 1-4 over every unfinished block; `run(function, job, pending, description)` executes block tasks
    (locally or on Dask). Returns the score of each final object."""
    store = job.store()
    for stage, function in ((SEEDS, seed_block), (OBJECTS, object_block), ("relabel", relabel_block)):
        if stage == OBJECTS:
            merge_seeds(job)
        if stage == "relabel":
            records = _object_records(job)  # pass 3's markers, read once for the ids and the halo check
            scores = final_ids(job, records)
        done = store.finished(stage)
        run(function, job, [i for i in job.indices() if block_name(i) not in done], stage)
    warning = halo_warning(job, records)
    if warning:
        print(f"reisoseg: warning: {warning}", file=sys.stderr)
    return scores
