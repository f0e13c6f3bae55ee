import pytest
import torch

from osum_echat.train import devices


def fake(monkeypatch, cuda=False, npu=False):
    monkeypatch.setattr(devices, "_cuda_available", lambda: cuda)
    monkeypatch.setattr(devices, "_npu_available", lambda: npu)
    monkeypatch.delenv("OSUM_DEVICE", raising=False)


@pytest.mark.parametrize("cuda,npu,expected", [(True, True, "cuda"), (False, True, "npu"), (False, False, "cpu")])
def test_detection_order(monkeypatch, cuda, npu, expected):
    fake(monkeypatch, cuda, npu)
    assert devices.device_type() == expected
    assert devices.dist_backend(expected) == {"cuda": "nccl", "npu": "hccl", "cpu": "gloo"}[expected]


def test_explicit_choice_wins(monkeypatch):
    fake(monkeypatch, cuda=True)
    assert devices.select_device("cpu") == torch.device("cpu")
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert devices.select_device("cuda") == torch.device("cuda", 3)
    assert devices.select_device("cuda:1") == torch.device("cuda", 1)


def test_unavailable_device_is_a_clear_error(monkeypatch):
    fake(monkeypatch)
    with pytest.raises(devices.DeviceError, match="'cuda' requested but not available"):
        devices.select_device("cuda")
    with pytest.raises(devices.DeviceError, match="unknown device 'tpu'"):
        devices.select_device("tpu")


def test_npu_without_torch_npu_explains(monkeypatch):
    monkeypatch.setattr(devices.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(devices.DeviceError, match="torch_npu is not installed"):
        devices.select_device("npu")
    assert devices._npu_available() is False  # detection never imports a missing torch_npu


def test_env_var_selects(monkeypatch):
    fake(monkeypatch, cuda=True)
    monkeypatch.setenv("OSUM_DEVICE", "cpu")
    assert devices.device_type() == "cpu"


def test_collectives_live_on_the_backends_device():
    assert devices.comm_device("gloo") == torch.device("cpu")
    assert devices.is_accelerator(torch.device("cuda", 0)) and not devices.is_accelerator(torch.device("cpu"))
