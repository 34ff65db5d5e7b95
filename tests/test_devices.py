import os

import pytest
import torch

from reisoseg.devices import cpu_computes_bf16, resolve_device
from reisoseg.errors import ReIsoSegError


def test_default_is_cuda_then_mps_then_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device(None) == torch.device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device(None) == torch.device("cpu")


def test_cpu_hides_the_gpus_from_nnunet(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert resolve_device("cpu") == torch.device("cpu")
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


def test_missing_cuda_is_a_user_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ReIsoSegError, match="`device` cuda was asked for, but torch sees no CUDA GPU"):
        resolve_device("cuda")


def test_unknown_device_is_a_user_error():
    with pytest.raises(ReIsoSegError, match="unknown `device` 'tpu'"):
        resolve_device("tpu")


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, True), (False, True, True), (False, False, False),
                                                        (None, None, False)])
def test_bf16_needs_avx512_bf16_or_amx_and_survives_torch_renaming_its_checks(monkeypatch, avx512_bf16, amx,
                                                                              expected):
    for name, value in (("_is_avx512_bf16_supported", avx512_bf16), ("_is_amx_tile_supported", amx)):
        if value is None:  # a torch without these private checks
            monkeypatch.delattr(torch.cpu, name, raising=False)
        else:
            monkeypatch.setattr(torch.cpu, name, lambda value=value: value)
    assert cpu_computes_bf16() is expected
