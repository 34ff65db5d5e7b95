"""The seam between `inference/` and an engine: blockwise segmentation with a pure-torch model, no nnU-Net."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reisoseg.errors import ReIsoSegError
from reisoseg.inference.segment import segment

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import sys
import numpy as np, zarr
from reisoseg.inference.segment import segment
from reisoseg.synthetic import generate_volume
from tests.inference.torch_model import TorchModelLoader

volume = generate_volume((6, 48, 40), 8, seed=4)
found = {}
for name, block in (("whole", (6, 48, 40)), ("blocks", (4, 40, 24))):  # the blocks cut every axis unevenly
    written = segment(volume.image, volume.spacing, TorchModelLoader(seed=1), sys.argv[1] + f"/{name}.zarr",
                      block=block, probabilities=True, progress=False)
    found[name] = zarr.open_group(str(written), mode="r")["probabilities"][:]
found["engines"] = sorted(m for m in sys.modules if m.split(".")[0] in ("nnunet", "batchgenerators"))
np.savez(sys.argv[1] + "/found.npz", **found)
"""


def test_pure_torch_model_segments_blockwise_without_nnunet_and_blocks_change_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    found = np.load(tmp_path / "found.npz")
    assert list(found["engines"]) == []  # nothing of nnU-Net was imported
    assert found["whole"].shape == (2, 6, 48, 40)
    np.testing.assert_array_equal(found["blocks"], found["whole"])
    labels = found["whole"].argmax(0)
    assert 0 < labels.mean() < 1  # both classes occur: the comparison is not between two constant volumes


def test_segment_refuses_what_is_not_a_model():
    with pytest.raises(ReIsoSegError, match="model: expected a trained model folder"):
        segment(np.ones((4, 8, 8), np.float32), (40, 5, 5), "not/a/loader")
