"""Statistics that compare synthetic and real EM stacks (used for calibration and its documentation)."""
from __future__ import annotations

import numpy as np
from scipy import ndimage


def neighbour_section_correlation(volume: np.ndarray) -> float:
    """Median Pearson correlation between consecutive sections of a (z, y, x) stack."""
    v = volume.astype(np.float32)
    values = [np.corrcoef(v[i].ravel(), v[i + 1].ravel())[0, 1] for i in range(len(v) - 1)]
    return float(np.median(values))


def noise_correlation(volume: np.ndarray, highpass_sigma: float = 3.0, max_sections: int = 8) -> float:
    """Median lag-1 in-plane autocorrelation of the high-pass residual: ~0 for pixel-white noise."""
    values = []
    for section in volume[:max_sections].astype(np.float32):
        residual = section - ndimage.gaussian_filter(section, highpass_sigma)
        values.append(np.corrcoef(residual[:, :-1].ravel(), residual[:, 1:].ravel())[0, 1])
    return float(np.median(values))


def mitochondria_contrast(volume: np.ndarray, mitochondria: np.ndarray) -> float:
    """How much darker mitochondria are than their surroundings: (mean away from them - mean deep inside them) over
    the standard deviation away from them. Deep: 3 px inside in-plane; away: over 4 px outside."""
    image = volume.astype(np.float32)
    deep = ndimage.binary_erosion(mitochondria, structure=np.ones((1, 7, 7), bool))
    away = ~ndimage.binary_dilation(mitochondria, structure=np.ones((1, 9, 9), bool))
    return float((image[away].mean() - image[deep].mean()) / image[away].std())
