import pickle
from collections import OrderedDict

import numpy as np
import pytest

from reisoseg.nnunet_v1.registry import UnsafePickleError, safe_load_pickle


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
    from reisoseg.nnunet_v1.compat import install

    install()
    import nnunet
    from nnunet.training import model_restore

    from reisoseg.nnunet_v1.trainers import ReIsoSegRMA4V6Trainer

    folder = [nnunet.__path__[0] + "/training/network_training"]
    module = "nnunet.training.network_training"
    assert model_restore.recursive_find_python_class(folder, "ReIsoSegRMA4V6Trainer", module) is ReIsoSegRMA4V6Trainer
    assert model_restore.recursive_find_python_class(folder, "nnUNetTrainerV2", module).__name__ == "nnUNetTrainerV2"


def test_rma_trainers_differ_by_pattern_only():
    from reisoseg.nnunet_v1.trainers import TRAINERS, ReIsoSegTrainer

    ours = {n: c for n, c in TRAINERS.items() if issubclass(c, ReIsoSegTrainer)}
    assert {n: c.ani_scale for n, c in ours.items()} == {
        "ReIsoSegTrainer": None, "ReIsoSegRMA1V6Trainer": (1, 1, 1), "ReIsoSegRMA2V6Trainer": (1, 1, 2),
        "ReIsoSegRMA4V6Trainer": (1, 2, 2), "ReIsoSegRMA8V6Trainer": (2, 2, 2)}
    for cls in ours.values():
        own = {name for name in vars(cls) if not (name.startswith("__") and name.endswith("__"))}  # not Python's
        assert cls is ReIsoSegTrainer or (cls.__bases__ == (ReIsoSegTrainer,) and own == {"ani_scale"})
