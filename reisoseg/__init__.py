"""ReIsoSeg: anisotropy-aware 3D segmentation of EM ultrastructure on nnU-Net v1."""
__version__ = "0.1.0"
