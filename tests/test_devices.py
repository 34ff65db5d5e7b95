import pytest
import torch

from reisoseg.devices import resolve_device
from reisoseg.errors import ReIsoSegError


def test_cpu_and_default_devices():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(None).type in ("cpu", "cuda", "mps")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_missing_cuda_is_a_user_error():
    with pytest.raises(ReIsoSegError, match="torch sees no CUDA GPU"):
        resolve_device("cuda")


def test_unknown_device_is_a_user_error():
    with pytest.raises(ReIsoSegError, match="unknown device 'tpu'"):
        resolve_device("tpu")
