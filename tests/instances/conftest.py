"""Hand-made objects at 40 x 5 x 5 nm and their ideal class probabilities."""
from __future__ import annotations

import numpy as np

SPACING = (40.0, 5.0, 5.0)


def ellipsoid(shape, center_nm, radii_nm, spacing=SPACING) -> np.ndarray:
    """Voxels whose centres lie inside the ellipsoid."""
    grids = np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij")
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grids, center_nm, radii_nm)) <= 1


def probabilities_from(target: np.ndarray, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """(3, z, y, x) probabilities of an ideal network for a background/interior/boundary target, plus noise."""
    one_hot = np.stack([target == k for k in range(3)]).astype(np.float32)
    if noise:
        one_hot += np.random.default_rng(seed).uniform(0, noise, one_hot.shape).astype(np.float32)
    return one_hot / one_hot.sum(0, keepdims=True)
