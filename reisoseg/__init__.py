"""ReIsoSeg: anisotropy-aware 3D segmentation of EM ultrastructure on nnU-Net v1."""
from __future__ import annotations

__version__ = "0.1.0"


def segment(volume, spacing=None, model=None, output=None, *, folds=None, checkpoint=None, fp32=False, **options):
    """Blockwise segmentation of a volume of any size with a trained nnU-Net v1 model folder (`folds`, `checkpoint`
    and `fp32` choose how it is loaded), or any `reisoseg.inference.model.ModelLoader`; the other options are those
    of `reisoseg.inference.segment.prepare`."""
    from reisoseg.inference.model import ModelLoader
    from reisoseg.inference.segment import segment as run

    if not isinstance(model, ModelLoader):
        from reisoseg.layout import FINAL_CHECKPOINT
        from reisoseg.nnunet_v1.block_predictor import NnunetV1Model

        model = NnunetV1Model.from_folder(model, folds, checkpoint or FINAL_CHECKPOINT, fp32)
    return run(volume, spacing, model, output, **options)
