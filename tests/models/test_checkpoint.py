"""The checkpoint file: loading errors a user can cause are told apart."""

import pytest
import torch

from pipeline.core.errors import UserError
from pipeline.data.classes import BINARY_PETS, classes_to_json
from pipeline.models.checkpoint import load_checkpoint, save_checkpoint
from pipeline.models.registry import build_model
from tests.support import SQUARE_32


def test_load_checkpoint_errors(tmp_path):
    with pytest.raises(UserError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "none.pt", torch.device("cpu"))
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(UserError, match="not a petseg checkpoint"):
        load_checkpoint(bad, torch.device("cpu"))


def _tiny_checkpoint(path):
    model = build_model("unet", base_channels=4)
    arch = {"base_channels": 4}
    info = {
        "out_channels": 1,
        "classes": classes_to_json(BINARY_PETS),
        "epoch": 1,
        "valid_dice": 0.5,
        "image_size": 32,
        "resize": SQUARE_32,
    }
    save_checkpoint(path, "unet", arch, model.state_dict(), **info)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_load_checkpoint_names_an_unusable_device_not_a_bad_file(tmp_path):
    _tiny_checkpoint(tmp_path / "m.pt")
    with pytest.raises(UserError, match=r"m.pt: cannot use cuda \(.*\); use the CPU") as err:
        load_checkpoint(tmp_path / "m.pt", torch.device("cuda"))
    assert "not a petseg checkpoint" not in str(err.value)


def test_load_checkpoint_names_out_of_memory(tmp_path, monkeypatch):
    _tiny_checkpoint(tmp_path / "m.pt")

    def no_memory(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch.nn.Module, "to", no_memory)
    with pytest.raises(UserError, match="out of memory on cpu moving the model there"):
        load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))


def test_load_checkpoint_names_host_memory_exhaustion(tmp_path, monkeypatch):
    _tiny_checkpoint(tmp_path / "m.pt")

    def no_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(torch, "load", no_memory)
    with pytest.raises(UserError, match="out of host memory while loading it"):
        load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))


def test_an_empty_checkpoint_file_is_named_as_not_a_checkpoint(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(UserError, match=r"empty.pt: not a petseg checkpoint \(.+\); give the \.pt a training stage"):
        load_checkpoint(tmp_path / "empty.pt", torch.device("cpu"))


def test_a_file_that_is_no_checkpoint_says_so_without_torchs_advice_on_trusting_it(tmp_path):
    (tmp_path / "params.yaml").write_text("lr: 0.001\n")
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path / "params.yaml", torch.device("cpu"))
    message = str(err.value)
    assert message == (
        f"{tmp_path / 'params.yaml'}: not a petseg checkpoint (UnpicklingError); "
        "give the .pt a training stage wrote (models/<model>.pt), or retrain it"
    )


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried"),
        torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    ],
)
def test_load_checkpoint_names_out_of_memory_while_reading_not_a_bad_file(tmp_path, monkeypatch, error):
    _tiny_checkpoint(tmp_path / "m.pt")

    def no_memory(*args, **kwargs):
        raise error

    monkeypatch.setattr(torch, "load", no_memory)
    with pytest.raises(UserError, match=r"m.pt: out of host memory while loading it \(.+\); free memory") as err:
        load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))
    assert "not a petseg checkpoint" not in str(err.value)
