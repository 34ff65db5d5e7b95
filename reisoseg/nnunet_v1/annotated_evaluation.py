"""nnU-Net's evaluator for a sparse task's fold validation. A module of its own: it imports nnU-Net, which prints a
banner on import, and is imported only while our trainers validate (`compat.scoring_annotated_voxels`); nnU-Net's
evaluation pool pickles the evaluator by its qualified name, so the class lives at module level."""
from __future__ import annotations

import numpy as np
from nnunet.evaluation.evaluator import NiftiEvaluator


class AnnotatedNiftiEvaluator(NiftiEvaluator):
    """nnU-Net's per-case evaluation of a prediction file against its reference file, with the voxels the reference
    marks `ignore` made background in both: a prediction there is neither right nor wrong (as `reisoseg evaluate
    --ignore_label` scores it). Without this, every object found in an unlabelled section is a false positive."""

    def __init__(self, ignore: int, *args, **kwargs):
        self.ignore = ignore
        super().__init__(*args, **kwargs)

    def evaluate(self, test=None, reference=None, voxel_spacing=None, **metric_kwargs):
        if test is not None:
            self.set_test(test)
        if reference is not None:
            self.set_reference(reference)
        unlabelled = self.reference == self.ignore
        self.test, self.reference = np.where(unlabelled, 0, self.test), np.where(unlabelled, 0, self.reference)
        return super().evaluate(None, None, voxel_spacing, **metric_kwargs)
