"""Synthetic anisotropic EM-like volumes with ground truth (numpy/scipy/torch only)."""
from reisoseg.synthetic.generator import CLASSES, SyntheticVolume, SynthParams, generate_volume
from reisoseg.synthetic.task import make_synthetic_task

__all__ = ["CLASSES", "SynthParams", "SyntheticVolume", "generate_volume", "make_synthetic_task"]
