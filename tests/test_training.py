import pytest
import torch

from pipeline.data import build_cache, make_split
from pipeline.errors import UserError
from pipeline.inference import predict_logits, torch_forward
from pipeline.metrics import SegmentationMeter
from pipeline.models import build_model
from pipeline.params import TrainConfig
from pipeline.training import fit, load_checkpoint, make_scheduler

CFG = TrainConfig(
    epochs=3, batch_size=4, lr=3e-3, weight_decay=0.0, scheduler="cosine", loss="bce_dice", seed=0, augment="full"
)


@pytest.fixture(scope="module")
def tiny_data(synthetic_root):
    split = make_split(synthetic_root, 0.25, seed=0)
    train = build_cache(synthetic_root, split.train, 32, "pet", progress=False)
    valid = build_cache(synthetic_root, split.valid, 32, "pet", progress=False)
    return (train.images, train.masks), (valid.images, valid.masks)


def _fit(tmp_path, tiny_data, cfg=CFG, name="unet"):
    logged = []
    arch = {"base_channels": 4} if name == "unet" else {"decoder_channels": [8, 8, 8, 4, 4]}
    result = fit(name, arch, cfg, *tiny_data, tmp_path / "m.pt", lambda e, r: logged.append((e, r)), progress=False)
    return result, logged


def test_fit_logs_every_epoch_and_keeps_the_best_valid_dice_weights(tmp_path, tiny_data):
    result, logged = _fit(tmp_path, tiny_data)
    assert [epoch for epoch, _ in logged] == [1, 2, 3]
    assert set(logged[0][1]) == {"train/loss", "valid/loss", "valid/dice", "lr"}
    dices = [record["valid/dice"] for _, record in logged]
    assert result.best_valid_dice == max(dices)
    assert result.best_epoch == 1 + dices.index(max(dices))
    # The cosine schedule lowers the lr from one epoch to the next.
    lrs = [record["lr"] for _, record in logged]
    assert lrs[0] == CFG.lr and lrs[0] > lrs[1] > lrs[2]

    model, ckpt = load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))
    assert ckpt["epoch"] == result.best_epoch and ckpt["valid_dice"] == result.best_valid_dice
    assert ckpt["image_size"] == 32 and ckpt["model"] == "unet"
    # The saved weights reproduce the logged valid Dice of the best epoch.
    images, masks = tiny_data[1]
    meter = SegmentationMeter()
    logits, _ = predict_logits(torch_forward(model, torch.device("cpu")), images, 4, "none")
    meter.update(torch.from_numpy(logits), torch.from_numpy(masks))
    assert meter.compute()["dice"] == pytest.approx(result.best_valid_dice, abs=1e-6)


def test_fit_is_deterministic_for_a_seed(tmp_path, tiny_data):
    _, first = _fit(tmp_path / "a", tiny_data)
    _, second = _fit(tmp_path / "b", tiny_data)
    assert first == second


def test_training_lowers_the_train_loss(tmp_path, tiny_data):
    cfg = TrainConfig(**{**CFG.__dict__, "epochs": 6, "augment": "none", "scheduler": "constant"})
    _, logged = _fit(tmp_path, tiny_data, cfg)
    assert logged[-1][1]["train/loss"] < logged[0][1]["train/loss"]
    assert {record["lr"] for _, record in logged} == {cfg.lr}


def test_resnet34_unet_trains_too(tmp_path, tiny_data):
    cfg = TrainConfig(**{**CFG.__dict__, "epochs": 1, "loss": "dice"})
    result, _ = _fit(tmp_path, tiny_data, cfg, name="resnet34_unet")
    _, ckpt = load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))
    assert ckpt["model"] == "resnet34_unet" and ckpt["valid_dice"] == result.best_valid_dice


def test_unknown_scheduler_is_a_user_error():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    with pytest.raises(UserError, match="cosine or constant"):
        make_scheduler("linear", opt, 10)


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
    torch.save({"model": "unet", "arch": arch, "state_dict": model.state_dict(), "epoch": 1, "valid_dice": 0.5,
                "image_size": 32}, path)  # fmt: skip


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
