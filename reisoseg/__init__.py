"""ReIsoSeg: anisotropy-aware 3D segmentation of EM ultrastructure on nnU-Net v1."""
__version__ = "0.1.0"


def segment(*args, **kwargs):
    """Blockwise segmentation of a volume of any size; see `reisoseg.inference.segment.segment`."""
    from reisoseg.inference.segment import segment as run

    return run(*args, **kwargs)
