import os
import pickle
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest

from reisoseg.safe_loading import UnsafePickleError, safe_load_pickle
from tests.conftest import NNUNET_VARIABLES


class _RunsCode:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_plans_like_pickle_loads(tmp_path):
    plans = OrderedDict(patch_size=np.array([16, 64, 64]), spacing=np.float64(40.0), classes={1, 2},
                        nested=[{"a": (1, 2.5, None, "s")}], dtype=np.dtype("float32"))
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"init": ("plans.pkl", 0), "plans": plans, "name": "ReIsoSegTrainer"}))
    loaded = safe_load_pickle(path)
    assert loaded["name"] == "ReIsoSegTrainer"
    assert np.array_equal(loaded["plans"]["patch_size"], [16, 64, 64]) and loaded["plans"]["spacing"] == 40.0


def test_pickle_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.model.pkl"
    path.write_bytes(pickle.dumps({"init": _RunsCode()}))
    with pytest.raises(UnsafePickleError, match="evil.model.pkl.*posix.system|evil.model.pkl.*os.system"):
        safe_load_pickle(path)


def test_trainer_lookup_finds_ours_and_falls_back_to_nnunet():
    from reisoseg.nnunet_v1.compat import redirected

    with redirected():
        import nnunet
        from nnunet.training import model_restore

        from reisoseg.nnunet_v1.trainers import TRAINERS

        folder = [nnunet.__path__[0] + "/training/network_training"]
        module = "nnunet.training.network_training"
        find = model_restore.recursive_find_python_class
        assert find(folder, "ReIsoSegRMA4V6Trainer", module) is TRAINERS["ReIsoSegRMA4V6Trainer"]
        assert find(folder, "nnUNetTrainerV2", module).__name__ == "nnUNetTrainerV2"


def test_the_redirections_last_as_long_as_the_block_and_nested_blocks_share_them():
    from nnunet.inference import predict
    from nnunet.training import model_restore

    from reisoseg.nnunet_v1.compat import redirected

    own = (model_restore.load_pickle, predict.load_model_and_checkpoint_files)
    with redirected():
        pass
    assert model_restore.load_pickle is own[0]  # nnU-Net's own, restored on leaving
    with redirected():
        assert model_restore.load_pickle is safe_load_pickle
        with redirected():
            assert predict.load_model_and_checkpoint_files is not own[1]
        assert model_restore.load_pickle is safe_load_pickle  # the outer block still holds them
    assert (model_restore.load_pickle, predict.load_model_and_checkpoint_files) == own


def test_another_nnunet_version_is_refused_in_one_line(monkeypatch):
    from reisoseg.errors import ReIsoSegError
    from reisoseg.nnunet_v1 import compat

    monkeypatch.setattr(compat, "version", lambda package: "1.7.0")
    with pytest.raises(ReIsoSegError, match=r"^nnunet 1\.7\.0 is installed, .* pip install nnunet==1\.7\.1$"):
        with compat.redirected():
            pass


def test_folders_set_after_nnunet_was_imported_take_effect(tmp_path):
    """nnU-Net reads its folders at import; a demo or notebook that sets them later must not train elsewhere."""
    script = """
import os, sys
for name in ("nnUNet_raw_data_base", "nnUNet_preprocessed", "RESULTS_FOLDER"):
    os.environ.pop(name, None)
import nnunet.run.default_configuration as config
import nnunet.experiment_planning.experiment_planner_baseline_2DUNet as planner  # `from nnunet.paths import *`
import nnunet.training.dataloading.dataset_loading as loading
from reisoseg.nnunet_v1.compat import redirected
for run in sys.argv[1:]:
    os.environ.update(nnUNet_raw_data_base=run + "/raw", nnUNet_preprocessed=run + "/preprocessed",
                      RESULTS_FOLDER=run + "/results")
    with redirected():
        folder = run + "/results/nnUNet/3d_fullres/Task001_X/ReIsoSegTrainer__nnUNetPlansv2.1"
        print(config.get_configuration_from_output_folder(folder), loading.preprocessing_output_dir,
              planner.network_training_output_dir, planner.nnUNet_cropped_data)
"""
    first, second = tmp_path / "first", tmp_path / "second"
    env = {k: v for k, v in os.environ.items() if k not in NNUNET_VARIABLES}
    result = subprocess.run([sys.executable, "-c", script, str(first), str(second)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("(")]
    for line, run in zip(lines, (first, second), strict=True):
        assert line == (f"('3d_fullres', 'Task001_X', 'ReIsoSegTrainer', 'nnUNetPlansv2.1') {run}/preprocessed "
                        f"{run}/results/nnUNet {run}/raw/nnUNet_cropped_data")
