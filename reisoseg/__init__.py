"""ReIsoSeg: anisotropy-aware 3D segmentation of EM ultrastructure on nnU-Net (v1, or v2 with the extra)."""
from __future__ import annotations

__version__ = "0.1.0"


def segment(volume, spacing=None, model=None, output=None, *, folds=None, checkpoint=None, fp32=False, **options):
    """Blockwise segmentation of a volume of any size with a trained nnU-Net v1 or v2 model folder (`folds`,
    `checkpoint` and `fp32` choose how it is loaded), or any `reisoseg.inference.model.ModelLoader`; the other
    options are those of `reisoseg.inference.segment.prepare`."""
    from reisoseg.engines import model_from_folder
    from reisoseg.inference.model import ModelLoader
    from reisoseg.inference.segment import segment as run

    if not isinstance(model, ModelLoader):
        model = model_from_folder(model, folds, checkpoint, fp32)
    return run(volume, spacing, model, output, **options)
