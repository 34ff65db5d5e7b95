"""napari sample data: a synthetic anisotropic EM volume (40 x 5 x 5 nm) with its truth, made here in seconds."""
from __future__ import annotations

from reisoseg.napari.layers import LayerData, layer_data
from reisoseg.synthetic.generator import generate_volume

SHAPE = (32, 192, 192)
RATIO = 8


def synthetic_volume() -> list[LayerData]:
    """The image, its mitochondria (one id each) and its classes."""
    volume = generate_volume(SHAPE, RATIO, seed=0)
    return [layer_data(volume.image, volume.spacing, "synthetic EM", "image"),
            layer_data(volume.labels, volume.spacing, "synthetic EM classes (truth)", "labels", visible=False),
            layer_data(volume.instances, volume.spacing, "synthetic EM objects (truth)", "labels")]
