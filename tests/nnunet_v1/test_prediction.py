"""Which folds of a v1 model folder prediction uses when none are named."""
from __future__ import annotations

import pytest

from reisoseg.errors import ReIsoSegError
from reisoseg.layout import FINAL_CHECKPOINT, checkpoint_file, fold_folder
from reisoseg.nnunet_v1.prediction import checked_folds


def _trained(model, *folds):
    for fold in folds:
        path = checkpoint_file(fold_folder(model, fold), FINAL_CHECKPOINT)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")


def test_by_default_every_fold_that_holds_the_checkpoint(tmp_path):
    _trained(tmp_path, 0, 2, "all")
    (tmp_path / "fold_1").mkdir()  # started, never saved
    assert checked_folds(tmp_path, None, FINAL_CHECKPOINT) == [0, 2]


def test_a_model_trained_on_fold_all_alone_predicts_with_it(tmp_path):
    _trained(tmp_path, "all")
    (tmp_path / "fold_0").mkdir()  # empty, as loading a model with an earlier version left it
    assert checked_folds(tmp_path, None, FINAL_CHECKPOINT) == ["all"]


def test_no_trained_fold_is_one_error_naming_the_folder(tmp_path):
    (tmp_path / "fold_0").mkdir()
    with pytest.raises(ReIsoSegError, match=f"{tmp_path}: no fold_\\* or all folder holds a {FINAL_CHECKPOINT}"):
        checked_folds(tmp_path, None, FINAL_CHECKPOINT)
    _trained(tmp_path, "all")
    with pytest.raises(ReIsoSegError, match="fold 3 was not trained"):
        checked_folds(tmp_path, ["3"], FINAL_CHECKPOINT)
