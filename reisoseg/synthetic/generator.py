"""Synthetic anisotropic EM-like volumes with ground truth, deterministic per seed.

Objects live in physical space (nm). Smooth fields (cell-boundary distance, tube signed distances, textures) are
computed on coarse grids and trilinearly upsampled to an isotropic canvas at the in-plane voxel size, one slab of
sections at a time, so memory stays bounded by the output. Each mitochondrion has a distance field of its own, so
that two touching mitochondria keep both their membranes and the gap between them: a union of the two would have no
interface to draw. Each section averages every canvas slice of its thickness, so a membrane inside a section darkens
it by the material it holds, whatever its orientation; then the image goes through blur, per-section misalignment
and gain drift, a few defective sections, and spatially correlated shot + read noise.

Truth: per-section labels (majority over the section's thickness), optionally the isotropic canvas labels, the
mitochondria instance ids, and a mask of the decoys (dark round bodies that look like a mitochondrion in one
section but are compact in 3D; never labelled).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial import cKDTree

CLASSES = {"mitochondria": 1, "synapse": 2}
CYTOPLASM_LEVEL = 0.60


@dataclass(frozen=True)
class SynthParams:
    """Generator settings in physical units; the defaults are calibrated against the real stacks (documentation/)."""

    xy_spacing_nm: float = 5.0
    cell_diameter_nm: float = 1100.0
    mito_per_um3: float = 12.0  # median 5.2 % of voxels (real stacks: 5.4 %, 8.8 %)
    mito_radius_nm: tuple[float, float] = (50.0, 100.0)
    mito_length_nm: tuple[float, float] = (400.0, 1600.0)
    in_plane_fraction: float = 0.35  # at least a quarter is enforced
    branch_probability: float = 0.15
    touching_probability: float = 0.5  # contacts across sections and in plane in most demo-sized volumes
    contact_gap_nm: float = 6.0  # cytosol between the outer membranes of two touching or crossing mitochondria
    decoys_per_um3: float = 3.0
    decoy_radius_nm: tuple[float, float] = (45.0, 95.0)
    er_per_um3: float = 3.0
    synapses_per_um3: float = 0.6
    blur_sigma_px: float = 0.7
    misalignment_px: float = 1.0
    gain_drift: float = 0.03
    defect_probability: float = 0.03
    coarse_texture: float = 0.025
    fine_texture: float = 0.03
    contrast: float = 2.2  # stretch of the rendered intensities about the cytoplasm level
    shot_noise: float = 0.08
    read_noise: float = 0.03
    noise_blur_px: float = 1.0
    mito_interior: float = 0.44  # matrix level


@dataclass
class SyntheticVolume:
    """One generated volume. Arrays are (z, y, x); spacing is (z, y, x) in nm."""

    image: np.ndarray  # uint8
    labels: np.ndarray  # uint8, values of `classes`
    instances: np.ndarray  # uint16 mitochondria instance ids per section
    decoys: np.ndarray  # bool, decoy bodies per section (not labelled)
    spacing: tuple[float, float, float]
    classes: dict[str, int] = field(default_factory=lambda: dict(CLASSES))
    isotropic_labels: np.ndarray | None = None  # uint8 on the isotropic canvas, if asked for


@dataclass
class _Tubes:
    points: np.ndarray  # (N, 3) nm, z y x
    radius: np.ndarray  # (N,) nm
    instance: np.ndarray  # (N,) int, 1-based


@dataclass
class _ObjectField:
    """One object's signed distance (nm) on the coarse grid, inside a box that holds all of it within `reach`."""

    instance: int
    origin: np.ndarray  # (3,) coarse index of the box's first voxel
    sdf: np.ndarray


@dataclass
class _Scene:
    extent: np.ndarray  # (3,) nm
    seeds: np.ndarray
    tree: cKDTree
    mito: _Tubes
    er: _Tubes
    decoys: list[tuple[np.ndarray, np.ndarray]]  # (center, radii) nm
    vesicles: list[tuple[np.ndarray, float]]  # (center, radius)
    synapses: list[tuple[np.ndarray, float, int]]  # (center, radius, postsynaptic cell)
    cristae_directions: np.ndarray  # (n_instances + 1, 3)


def _boundary_distance(tree: cKDTree, seeds: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance (nm) from each point to its Voronoi cell's nearest wall, and the cell index."""
    dist, idx = tree.query(points, k=2)
    gap = np.linalg.norm(seeds[idx[:, 0]] - seeds[idx[:, 1]], axis=1)
    return (dist[:, 1] ** 2 - dist[:, 0] ** 2) / (2 * np.maximum(gap, 1e-6)), idx[:, 0]


def _random_unit(rng: np.random.Generator, in_plane: bool) -> np.ndarray:
    v = rng.normal(size=3)
    if in_plane:
        v[0] *= 0.08
    return v / np.linalg.norm(v)


def _walk(rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, length: float, step: float,
          bend: float, in_plane: bool) -> np.ndarray:
    n = max(2, int(length / step))
    kicks = rng.normal(scale=bend, size=(n, 3))
    if in_plane:
        kicks[:, 0] *= 0.1
    points = np.empty((n, 3))
    points[0] = start
    d = direction.copy()
    for i in range(1, n):
        d = d + kicks[i]
        d /= np.linalg.norm(d)
        points[i] = points[i - 1] + step * d
    return points


def _inside_cell(scene_tree: cKDTree, seeds: np.ndarray, points: np.ndarray, cell: int, margin: float) -> int:
    """Number of leading points that stay in `cell`, at least `margin` nm from its walls."""
    b, idx = _boundary_distance(scene_tree, seeds, points)
    bad = np.flatnonzero((idx != cell) | (b < margin))
    return int(bad[0]) if bad.size else len(points)


def _build_scene(shape_nm: np.ndarray, params: SynthParams, rng: np.random.Generator) -> _Scene:
    volume_um3 = float(np.prod(shape_nm)) / 1e9
    pad = params.cell_diameter_nm
    n_cells = max(4, int(round(np.prod(shape_nm + 2 * pad) / (params.cell_diameter_nm ** 3 * 0.52))))
    seeds = rng.uniform(0, 1, size=(n_cells, 3)) * (shape_nm + 2 * pad) - pad
    tree = cKDTree(seeds)

    def random_host() -> tuple[np.ndarray, int]:
        """A point inside the canvas and the cell that owns it (objects are placed where they can be seen)."""
        point = rng.uniform(0, 1, 3) * shape_nm
        return point, int(tree.query(point)[1])

    # Mitochondria: bent tubes inside one cell, sometimes branched, sometimes touching a neighbour.
    pts, rad, inst = [], [], []
    n_mito = max(2, rng.poisson(params.mito_per_um3 * volume_um3))
    n_in_plane = max(math.ceil(n_mito / 4), int(round(params.in_plane_fraction * n_mito)))
    instance = 0
    for k in range(n_mito):
        start, cell = random_host()
        in_plane = k < n_in_plane
        radius = rng.uniform(*params.mito_radius_nm)
        length = rng.uniform(*params.mito_length_nm)
        direction = _random_unit(rng, in_plane)
        # grow both ways from the start so that the tube is centred in its cell
        half = [_walk(rng, start, s * direction, length / 2, 10.0, 0.05, in_plane) for s in (1, -1)]
        margin = radius + 20.0
        half = [h[:_inside_cell(tree, seeds, h, cell, margin)] for h in half]
        path = np.concatenate([half[1][::-1], half[0][1:]]) if len(half[1]) else half[0]
        if len(path) < 3:
            continue
        instance += 1
        pieces = [path]
        if rng.random() < params.branch_probability:
            origin = path[rng.integers(len(path))]
            branch = _walk(rng, origin, _random_unit(rng, in_plane), length / 2, 10.0, 0.06, in_plane)
            pieces.append(branch[:_inside_cell(tree, seeds, branch, cell, margin)])
        for piece in pieces:
            pts.append(piece)
            rad.append(np.full(len(piece), radius))
            inst.append(np.full(len(piece), instance))
        if rng.random() < params.touching_probability:
            tangent = path[-1] - path[0]
            normal = np.cross(tangent, rng.normal(size=3))
            normal /= max(np.linalg.norm(normal), 1e-6)
            other_radius = rng.uniform(*params.mito_radius_nm)
            neighbour = path + normal * (radius + other_radius + params.contact_gap_nm)
            neighbour = neighbour[:_inside_cell(tree, seeds, neighbour, cell, other_radius + 10.0)]
            if len(neighbour) >= 3:
                instance += 1
                pts.append(neighbour)
                rad.append(np.full(len(neighbour), other_radius))
                inst.append(np.full(len(neighbour), instance))
    mito = _Tubes(np.concatenate(pts) if pts else np.zeros((0, 3)), np.concatenate(rad) if rad else np.zeros(0),
                  np.concatenate(inst) if inst else np.zeros(0, int))

    # ER: thin, strongly bent tubules.
    er_pts, er_rad = [], []
    for _ in range(rng.poisson(params.er_per_um3 * volume_um3)):
        start = rng.uniform(0, 1, 3) * shape_nm
        path = _walk(rng, start, _random_unit(rng, rng.random() < 0.5), rng.uniform(300, 900), 8.0, 0.15, False)
        er_pts.append(path)
        er_rad.append(np.full(len(path), rng.uniform(16.0, 26.0)))
    er = _Tubes(np.concatenate(er_pts) if er_pts else np.zeros((0, 3)),
                np.concatenate(er_rad) if er_rad else np.zeros(0), np.zeros(sum(map(len, er_pts)), int))

    # Decoys: dark, compact, nearly round bodies of a mitochondrion's cross-section size.
    decoys = []
    for _ in range(max(1, rng.poisson(params.decoys_per_um3 * volume_um3))):
        center, _ = random_host()
        radius = rng.uniform(*params.decoy_radius_nm)
        decoys.append((center, radius * rng.uniform(0.85, 1.15, size=3)))

    # Synapses: a vesicle cluster in one cell beside a wall, a dense patch on the partner's side.
    vesicles, synapses = [], []
    for _ in range(rng.poisson(params.synapses_per_um3 * volume_um3)):
        probe = rng.uniform(0, 1, 3) * shape_nm
        dist, idx = tree.query(probe, k=2)
        pre, post = int(idx[0]), int(idx[1])
        normal = seeds[post] - seeds[pre]
        normal /= np.linalg.norm(normal)
        midpoint = (seeds[pre] + seeds[post]) / 2
        wall_point = probe + normal * float(np.dot(midpoint - probe, normal))
        cluster_radius = rng.uniform(110.0, 180.0)
        center = wall_point - normal * (cluster_radius + 15.0)
        synapses.append((center, cluster_radius, post))
        for _ in range(rng.integers(60, 120)):
            offset = rng.normal(size=3)
            offset *= rng.uniform(0, cluster_radius - 20.0) / np.linalg.norm(offset)
            vesicles.append((center + offset, rng.uniform(16.0, 22.0)))

    directions = rng.normal(size=(instance + 1, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return _Scene(shape_nm, seeds, tree, mito, er, decoys, vesicles, synapses, directions)


def _coarse_centers(n: np.ndarray, step_nm: float) -> np.ndarray:
    axes = [(np.arange(int(k)) + 0.5) * step_nm for k in n]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)


def _tube_field(tubes: _Tubes, coarse_shape: np.ndarray, step_nm: float) -> np.ndarray:
    """Signed distance (nm) to the surface of the union of tubes, on a coarse grid."""
    if len(tubes.points) == 0:
        return np.full(coarse_shape, 1e4, np.float32)
    # points just outside the canvas still shape the surface near the border: clamp them onto it
    index = np.clip(np.floor(tubes.points / step_nm).astype(int), 0, coarse_shape - 1)
    radius_grid = np.zeros(coarse_shape, np.float32)
    order = np.argsort(tubes.radius)  # the larger radius wins where points share a voxel
    radius_grid[tuple(index[order].T)] = tubes.radius[order]
    dist, nearest = ndimage.distance_transform_edt(radius_grid == 0, sampling=step_nm, return_indices=True)
    sdf = dist - radius_grid[tuple(nearest)]
    return ndimage.gaussian_filter(sdf.astype(np.float32), 0.6)


def _object_fields(tubes: _Tubes, coarse_shape: np.ndarray, step_nm: float, reach_nm: float) -> list[_ObjectField]:
    """Each instance's `_tube_field` in its own box, padded so that the surface and `reach_nm` beyond it lie inside."""
    fields = []
    for instance in np.unique(tubes.instance):
        mine = tubes.instance == instance
        points, radius = tubes.points[mine], tubes.radius[mine]
        pad = int(math.ceil((float(radius.max()) + reach_nm) / step_nm)) + 2
        index = np.clip(np.floor(points / step_nm).astype(int), 0, coarse_shape - 1)
        low = np.maximum(index.min(0) - pad, 0)
        high = np.minimum(index.max(0) + pad + 1, coarse_shape)
        local = _Tubes(points - low * step_nm, radius, np.full(len(points), int(instance)))
        fields.append(_ObjectField(int(instance), low, _tube_field(local, high - low, step_nm)))
    return fields


def _nearest_object(fields: list[_ObjectField], factor: int, z_canvas: np.ndarray, out_shape: tuple[int, int],
                    gap_nm: float) -> tuple[np.ndarray, np.ndarray]:
    """Signed distance to the nearest object and its id on the canvas slices `z_canvas`.

    Each object's field is upsampled on its own, and where two objects meet or overlap each gives way to the
    half-way surface between them less half of `gap_nm`: touching objects keep an interface with a gap, whatever
    their placement.
    """
    nearest = np.full((len(z_canvas), *out_shape), 1e4, np.float32)
    second = nearest.copy()
    ids = np.zeros(nearest.shape, np.int64)
    for object_field in fields:
        z0, y0, x0 = (int(v) * factor for v in object_field.origin)
        depth, height, width = (int(v) * factor for v in object_field.sdf.shape)
        rows = np.flatnonzero((z_canvas >= z0) & (z_canvas < z0 + depth))
        height, width = min(height, out_shape[0] - y0), min(width, out_shape[1] - x0)
        if rows.size == 0 or height <= 0 or width <= 0:
            continue
        local = _upsample(object_field.sdf, factor, z_canvas[rows] - z0, (height, width))
        region = (rows, slice(y0, y0 + height), slice(x0, x0 + width))
        first, runner_up = nearest[region], second[region]
        closer = local < first
        second[region] = np.where(closer, first, np.minimum(runner_up, local))
        nearest[region] = np.where(closer, local, first)
        ids[region] = np.where(closer, object_field.instance, ids[region])
    return np.maximum(nearest, (nearest - second + gap_nm) / 2), ids


def _upsample(field_: np.ndarray, factor: int, z_canvas: np.ndarray, out_shape: tuple[int, int],
              mode: str = "trilinear") -> np.ndarray:
    """A coarse field (sampled every `factor` canvas voxels, at cell centres) on the canvas slices `z_canvas`:
    trilinear (clamped at the border, as `F.interpolate(align_corners=False)`) or nearest."""
    position = (z_canvas + 0.5) / factor - 0.5
    if mode == "nearest":
        lower = np.clip(z_canvas // factor, 0, field_.shape[0] - 1)
        needed, weight = np.unique(lower), None
    else:
        lower = np.clip(np.floor(position).astype(int), 0, field_.shape[0] - 1)
        upper = np.clip(lower + 1, 0, field_.shape[0] - 1)
        weight = np.clip(position - np.floor(position), 0, 1).astype(np.float32)
        weight[position < 0] = 0.0
        needed = np.unique(np.concatenate([lower, upper]))
    block = torch.from_numpy(np.ascontiguousarray(field_[needed], dtype=np.float32))[:, None]
    kwargs = {"align_corners": False} if mode == "trilinear" else {}
    planes = F.interpolate(block, scale_factor=factor, mode="bilinear" if mode == "trilinear" else "nearest",
                           **kwargs)[:, 0, :out_shape[0], :out_shape[1]].numpy()
    slot = {int(k): i for i, k in enumerate(needed)}
    if weight is None:
        return planes[[slot[int(k)] for k in lower]]
    below = planes[[slot[int(k)] for k in lower]]
    above = planes[[slot[int(k)] for k in upper]]
    return below + weight[:, None, None] * (above - below)


def _sphere_sdf(z: np.ndarray, y: np.ndarray, x: np.ndarray, center: np.ndarray, radii: np.ndarray) -> np.ndarray:
    r = np.sqrt(((z - center[0]) / radii[0]) ** 2 + ((y - center[1]) / radii[1]) ** 2
                + ((x - center[2]) / radii[2]) ** 2)
    return (r - 1.0) * float(np.min(radii))


def _paint_spheres(canvas_sdf: np.ndarray, z_nm: np.ndarray, xy: float,
                   spheres: list[tuple[np.ndarray, np.ndarray]]) -> None:
    """Minimum of sphere/ellipsoid SDFs, evaluated only inside each body's bounding box."""
    for center, radii in spheres:
        reach = float(np.max(radii)) + 12.0
        zsel = np.flatnonzero(np.abs(z_nm - center[0]) < reach)
        if zsel.size == 0:
            continue
        y0, y1 = (max(0, int((center[1] - reach) / xy)), min(canvas_sdf.shape[1], int((center[1] + reach) / xy) + 1))
        x0, x1 = (max(0, int((center[2] - reach) / xy)), min(canvas_sdf.shape[2], int((center[2] + reach) / xy) + 1))
        if y0 >= y1 or x0 >= x1:
            continue
        zz = z_nm[zsel][:, None, None]
        yy = ((np.arange(y0, y1) + 0.5) * xy)[None, :, None]
        xx = ((np.arange(x0, x1) + 0.5) * xy)[None, None, :]
        region = canvas_sdf[zsel[0]:zsel[-1] + 1, y0:y1, x0:x1]
        np.minimum(region, _sphere_sdf(zz, yy, xx, center, radii), out=region)


def _texture(rng: np.random.Generator, shape: np.ndarray, sigma: float) -> np.ndarray:
    field_ = ndimage.gaussian_filter(rng.normal(size=tuple(shape)).astype(np.float32), sigma)
    return field_ / (field_.std() + 1e-6)


def _band(x: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.exp(-((x - center) / width) ** 2)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _render_slices(scene: _Scene, fields: dict, params: SynthParams, z_canvas: np.ndarray, ny: int,
                   nx: int) -> tuple[np.ndarray, ...]:
    """Intensity and truth on the canvas slices `z_canvas`; organelle terms are evaluated only near organelles."""
    xy = params.xy_spacing_nm

    def up(name: str, step: int, mode: str = "trilinear") -> np.ndarray:
        return _upsample(fields[name], step, z_canvas, (ny, nx), mode)

    z_nm = ((z_canvas + 0.5) * xy).astype(np.float32)
    zz = z_nm[:, None, None]
    yy = ((np.arange(ny, dtype=np.float32) + 0.5) * xy)[None, :, None]
    xx = ((np.arange(nx, dtype=np.float32) + 0.5) * xy)[None, None, :]
    plane = [up(f"plane{i}", 8, "nearest") for i in range(4)]  # unit normal (3) and offset of the nearest wall
    signed = zz * plane[0] + yy * plane[1] + xx * plane[2] - plane[3]
    b = np.abs(signed)
    cell = np.where(signed < 0, up("first", 8, "nearest"), up("second", 8, "nearest")).astype(np.int64)
    image = CYTOPLASM_LEVEL + params.coarse_texture * up("texture", 8) + params.fine_texture * up("fine", 4)
    image += 0.15 * _sigmoid((5.0 - b) / 1.5)  # extracellular gap
    image -= 0.34 * _band(b, 9.0, 3.5)  # plasma membranes

    m_sdf, m_id = _nearest_object(fields["mitochondria"], 4, z_canvas, (ny, nx), params.contact_gap_nm)
    near = m_sdf < 20.0
    sdf = m_sdf[near]
    ids = m_id[near]
    direction = scene.cristae_directions[ids]
    zn, yn, xn = (np.broadcast_to(a, m_sdf.shape)[near] for a in (zz, yy, xx))
    cristae = np.sin(2 * np.pi * (zn * direction[:, 0] + yn * direction[:, 1] + xn * direction[:, 2]) / 38.0
                     + fields["crista_phase"][ids])
    inside = _sigmoid(-sdf / 2.0)
    image[near] = image[near] * (1 - inside) + inside * (params.mito_interior + 0.05 * cristae) \
        - 0.26 * (_band(sdf, -3.0, 3.0) + _band(sdf, -11.0, 3.0))  # double membrane

    e_sdf = up("er_sdf", 4)
    near = e_sdf < 15.0
    sdf = e_sdf[near]
    inside = _sigmoid(-sdf / 2.0)
    image[near] = image[near] * (1 - inside) + inside * 0.70 - 0.22 * _band(sdf, 0.0, 3.0)

    d_sdf = np.full(m_sdf.shape, 1e4, np.float32)
    _paint_spheres(d_sdf, z_nm, xy, scene.decoys)
    near = d_sdf < 15.0
    inside = _sigmoid(-d_sdf[near] / 3.0)
    image[near] = image[near] * (1 - inside) + inside * 0.30
    v_sdf = np.full(m_sdf.shape, 1e4, np.float32)
    _paint_spheres(v_sdf, z_nm, xy, [(c, np.full(3, r)) for c, r in scene.vesicles])
    near = v_sdf < 10.0
    sdf = v_sdf[near]
    inside = _sigmoid(-sdf / 1.5)
    image[near] = image[near] * (1 - inside) + inside * 0.72 - 0.30 * _band(sdf, 0.0, 2.5)

    cluster = np.zeros(m_sdf.shape, bool)
    dense_patch = np.zeros(m_sdf.shape, bool)
    for center, radius, post in scene.synapses:
        reach = radius + 60.0
        zsel = np.flatnonzero(np.abs(z_nm - center[0]) < reach)
        y0, y1 = max(0, int((center[1] - reach) / xy)), min(ny, int((center[1] + reach) / xy) + 1)
        x0, x1 = max(0, int((center[2] - reach) / xy)), min(nx, int((center[2] + reach) / xy) + 1)
        if zsel.size == 0 or y0 >= y1 or x0 >= x1:
            continue
        box = (slice(zsel[0], zsel[-1] + 1), slice(y0, y1), slice(x0, x1))
        distance = np.sqrt((zz[box[0]] - center[0]) ** 2 + (yy[:, box[1]] - center[1]) ** 2
                           + (xx[:, :, box[2]] - center[2]) ** 2)
        cluster[box] |= distance < radius
        dense_patch[box] |= (distance < reach) & (cell[box] == post) & (b[box] < 30.0)
    image -= 0.22 * dense_patch * _sigmoid((25.0 - b) / 3.0)
    return image, m_sdf < 0, m_id, d_sdf < 0, cluster | dense_patch


def generate_volume(shape: tuple[int, int, int] = (32, 192, 192), ratio: int = 8, *, seed: int = 0,
                    params: SynthParams = SynthParams(), keep_isotropic: bool = False,
                    chunk_sections: int = 4) -> SyntheticVolume:
    """Generate one anisotropic EM-like volume and its truth.

    Args:
        shape: output (sections, y, x).
        ratio: z spacing over in-plane spacing, 1-12: each section averages the `ratio` canvas slices of its
            thickness.
        seed: the same seed gives the same volume, bit for bit.
        params: physical and imaging settings.
        keep_isotropic: also return the labels on the isotropic canvas (ratio x more memory).
        chunk_sections: sections rendered at once (bounds memory).

    Returns:
        SyntheticVolume with uint8 image and labels, spacing (ratio * xy, xy, xy) nm.
    """
    if not 1 <= int(ratio) <= 12:
        raise ValueError(f"ratio must be an integer in 1-12, got {ratio}")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes (sections, y, x), got {shape}")
    ratio = int(ratio)
    rng = np.random.default_rng(seed)
    xy = params.xy_spacing_nm
    nz, ny, nx = (int(s) for s in shape)
    canvas_shape = np.array([nz * ratio, ny, nx])
    scene = _build_scene(canvas_shape * xy, params, rng)

    # coarse smooth fields; walls as planes (unit normal, offset) of each coarse voxel's two nearest seeds
    cell_grid = -(-canvas_shape // 8)
    _, pairs = scene.tree.query(_coarse_centers(cell_grid, 8 * xy), k=2)
    a, c = scene.seeds[pairs[:, 0]], scene.seeds[pairs[:, 1]]
    normal = (c - a) / np.maximum(np.linalg.norm(c - a, axis=1, keepdims=True), 1e-6)
    offset = np.einsum("ij,ij->i", normal, (a + c) / 2)
    tube_grid = -(-canvas_shape // 4)
    fields = {f"plane{i}": v.reshape(cell_grid).astype(np.float32)
              for i, v in enumerate((normal[:, 0], normal[:, 1], normal[:, 2], offset))}
    fields.update(first=pairs[:, 0].reshape(cell_grid).astype(np.float32),
                  second=pairs[:, 1].reshape(cell_grid).astype(np.float32),
                  mitochondria=_object_fields(scene.mito, tube_grid, 4 * xy, reach_nm=40.0),
                  er_sdf=_tube_field(scene.er, tube_grid, 4 * xy),
                  texture=_texture(rng, cell_grid, 1.0),  # organelle-scale shading, ~60 nm
                  fine=_texture(rng, tube_grid, 0.6),  # cytoplasmic grain, ~20 nm: decorrelates sections
                  crista_phase=rng.uniform(0, 2 * np.pi, size=len(scene.cristae_directions)))

    sections = np.empty((nz, ny, nx), np.float32)
    labels = np.zeros((nz, ny, nx), np.uint8)
    instances = np.zeros((nz, ny, nx), np.uint16)
    decoy_sections = np.zeros((nz, ny, nx), bool)
    iso_labels = np.zeros(tuple(canvas_shape), np.uint8) if keep_isotropic else None
    for s0 in range(0, nz, chunk_sections):
        s1 = min(nz, s0 + chunk_sections)
        z_canvas = np.arange(s0 * ratio, s1 * ratio)
        image, mito, mito_id, decoy, synapse = _render_slices(scene, fields, params, z_canvas, ny, nx)
        truth = np.zeros(mito.shape, np.uint8)
        truth[synapse] = CLASSES["synapse"]
        truth[mito] = CLASSES["mitochondria"]
        if iso_labels is not None:
            iso_labels[s0 * ratio:s1 * ratio] = truth
        per_section = (s1 - s0, ratio, ny, nx)
        sections[s0:s1] = image.reshape(per_section).mean(1)
        mito_fraction = mito.reshape(per_section).mean(1)
        labels[s0:s1][synapse.reshape(per_section).mean(1) >= 0.5] = CLASSES["synapse"]
        labels[s0:s1][mito_fraction >= 0.5] = CLASSES["mitochondria"]
        instances[s0:s1] = np.where(mito_fraction >= 0.5, mito_id.reshape(per_section)[:, ratio // 2], 0)
        decoy_sections[s0:s1] = decoy.reshape(per_section).mean(1) >= 0.5

    image = _image_formation(sections, labels, instances, decoy_sections, params, rng)
    spacing = (ratio * xy, xy, xy)
    return SyntheticVolume(image, labels, instances, decoy_sections, spacing, isotropic_labels=iso_labels)


def _drift(rng: np.random.Generator, n: int, scale: float, memory: float = 0.8) -> np.ndarray:
    """Mean-reverting (AR(1)) drift with stationary standard deviation `scale`."""
    steps = rng.normal(scale=scale * np.sqrt(1 - memory ** 2), size=n)
    out = np.empty(n)
    out[0] = rng.normal(scale=scale)
    for i in range(1, n):
        out[i] = memory * out[i - 1] + steps[i]
    return out


def _image_formation(sections: np.ndarray, labels: np.ndarray, instances: np.ndarray, decoys: np.ndarray,
                     params: SynthParams, rng: np.random.Generator) -> np.ndarray:
    """Blur, misalign (truth moves with its section), gain drift, defects and correlated noise; in place for truth."""
    nz = len(sections)
    gain, offset = 1.0 + _drift(rng, nz, params.gain_drift), _drift(rng, nz, params.gain_drift / 2)
    shifts = rng.normal(scale=params.misalignment_px, size=(nz, 2))
    defective = rng.random(nz) < params.defect_probability
    out = np.empty(sections.shape, np.uint8)
    for z in range(nz):
        section = ndimage.gaussian_filter(sections[z], params.blur_sigma_px)
        section = ndimage.shift(section, shifts[z], order=1, mode="nearest")
        for truth in (labels, instances, decoys):
            truth[z] = ndimage.shift(truth[z], np.round(shifts[z]), order=0, mode="nearest")
        section = (0.5 + params.contrast * (section - CYTOPLASM_LEVEL)) * gain[z] + offset[z]
        if defective[z]:
            section = 0.5 + 0.45 * (section - 0.5)
            row = rng.integers(section.shape[0])
            section[max(0, row - 2):row + 2] *= 0.4  # a fold
        noise = rng.normal(size=section.shape).astype(np.float32) * params.shot_noise * np.sqrt(
            np.clip(section, 0.01, None)) + rng.normal(size=section.shape).astype(np.float32) * params.read_noise
        smoothed = ndimage.gaussian_filter(noise, params.noise_blur_px)
        smoothed *= noise.std() / (smoothed.std() + 1e-9)  # keep the amplitude, correlate in space
        out[z] = np.clip((section + smoothed) * 255.0, 0, 255).astype(np.uint8)
    return out
