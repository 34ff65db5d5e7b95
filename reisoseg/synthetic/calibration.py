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
