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


RESUMABLE = """
import sys
from pathlib import Path
from reisoseg.inference.segment import segment
from reisoseg.io.volume import write_volume
from reisoseg.synthetic import generate_volume
from tests.inference.torch_model import TorchModelLoader

source = Path(sys.argv[1]).with_name("raw.zarr")  # a file: an array's run cannot be recognised when resumed
if not source.exists():
    volume = generate_volume((6, 48, 40), 8, seed=4)
    write_volume(source, volume.image, volume.spacing)
segment(source, None, TorchModelLoader(seed=1, seconds_per_block=float(sys.argv[2])), sys.argv[1],
        block=(4, 40, 24), progress=False)
"""


def test_a_killed_run_resumes_skipping_finished_blocks_with_the_same_result(tmp_path):
    import signal
    import time

    from reisoseg.io.volume import open_volume

    def start(output, seconds_per_block):
        return subprocess.Popen([sys.executable, "-c", RESUMABLE, str(output), str(seconds_per_block)], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    markers = tmp_path / "killed.zarr.partial" / ".blocks"
    process = start(tmp_path / "killed.zarr", 2.0)  # 8 blocks, 2 s each
    deadline = time.monotonic() + 300
    while not (markers.is_dir() and [p for p in markers.iterdir() if not p.name.startswith(".")]):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    done = len([p for p in markers.iterdir() if not p.name.startswith(".")])
    assert 1 <= done < 8 and not (tmp_path / "killed.zarr").exists()
    resumed = start(tmp_path / "killed.zarr", 0.0)
    assert resumed.wait(timeout=300) == 0
    assert f"skipping {done} of 8 finished blocks" in resumed.stderr.read()
    uninterrupted = start(tmp_path / "whole.zarr", 0.0)
    assert uninterrupted.wait(timeout=300) == 0
    np.testing.assert_array_equal(open_volume(tmp_path / "killed.zarr").read(),
                                  open_volume(tmp_path / "whole.zarr").read())


def test_segment_refuses_what_is_not_a_model():
    with pytest.raises(ReIsoSegError, match="model: expected a trained model folder"):
        segment(np.ones((4, 8, 8), np.float32), (40, 5, 5), "not/a/loader")
