"""mlpot.device (device/dtype names resolved in one place) and mlpot.io.files (atomic writes)."""

from __future__ import annotations

import os

import pytest
import torch

from mlpot.device import resolve_device, resolve_dtype
from mlpot.io.files import atomic_path, atomic_torch_save, atomic_write_text


def test_device_names():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="training.device 'tpu' is not a device"):
        resolve_device("tpu", "training.device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


@pytest.mark.parametrize("name, dtype", [("float64", torch.float64), ("double", torch.float64),
                                         ("torch.float32", torch.float32), ("FP32", torch.float32),
                                         (torch.float64, torch.float64)])
def test_dtype_names(name, dtype):
    assert resolve_dtype(name) is dtype


@pytest.mark.parametrize("bad", ["float16", "int64", torch.int64, torch.bfloat16])
def test_dtype_refuses_what_mlpot_does_not_compute_in(bad):
    with pytest.raises(ValueError, match="float32 or float64|must be one of"):
        resolve_dtype(bad)


def test_atomic_write_keeps_the_old_file_on_error(tmp_path):
    path = tmp_path / "model.pt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError, match="interrupted"):
        with atomic_path(path) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["model.pt"]  # no temporary file left behind
    atomic_torch_save({"x": torch.arange(3)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["x"], torch.arange(3))
    assert os.listdir(tmp_path) == ["model.pt"]
