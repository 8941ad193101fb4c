import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import pipeline.train.fit as training
from pipeline.core.errors import UserError
from pipeline.evaluate.inference import predict_logits, torch_forward
from pipeline.evaluate.metrics import SegmentationMeter
from pipeline.models.checkpoint import load_checkpoint
from pipeline.train.config import TrainConfig
from pipeline.train.fit import fit
from pipeline.train.loop import Batch, accumulation_groups, train_epoch
from pipeline.train.losses import bce_loss
from pipeline.train.schedules import LrSchedule

CFG = TrainConfig(
    epochs=3,
    batch_size=4,
    lr=3e-3,
    weight_decay=0.0,
    scheduler="cosine",
    loss="bce_dice",
    seed=0,
    augment="full",
    num_workers=0,
)
CPU = Batch(torch.device("cpu"), False, torch.contiguous_format)


def _fit(tmp_path, tiny_data, cfg=CFG, name="unet", **kwargs):
    logged = []
    arch = {"base_channels": 4} if name == "unet" else {"decoder_channels": [8, 8, 8, 4, 4]}
    result = fit(
        name, arch, cfg, *tiny_data, tmp_path / "m.pt", lambda e, r: logged.append((e, r)), progress=False, **kwargs
    )
    return result, logged


def _results(logged):
    """The logged records without the timings, which differ from run to run."""
    return [(e, {k: v for k, v in r.items() if not k.startswith("time/")}) for e, r in logged]


def test_fit_logs_every_epoch_and_keeps_the_best_valid_dice_weights(tmp_path, tiny_data):
    result, logged = _fit(tmp_path, tiny_data)
    assert [epoch for epoch, _ in logged] == [1, 2, 3]
    assert set(logged[0][1]) == {"train/loss", "valid/loss", "valid/dice", "lr", "time/data_wait"}
    assert all(0 <= record["time/data_wait"] <= 1 for _, record in logged)
    dices = [record["valid/dice"] for _, record in logged]
    assert result.best_valid_dice == max(dices)
    assert result.best_epoch == 1 + dices.index(max(dices))
    assert result.last_epoch == 3 and result.resumed_from == 0
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
    assert _results(first) == _results(second)


def test_results_do_not_depend_on_the_number_of_loader_workers(tmp_path, tiny_data):
    _, inline = _fit(tmp_path / "0", tiny_data)
    _, workers = _fit(tmp_path / "2", tiny_data, CFG.model_copy(update=dict(num_workers=2)))
    assert _results(inline) == _results(workers)
    a = torch.load(tmp_path / "0" / "m.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "2" / "m.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_training_lowers_the_train_loss(tmp_path, tiny_data):
    cfg = CFG.model_copy(update=dict(epochs=6, augment="none", scheduler="constant"))
    _, logged = _fit(tmp_path, tiny_data, cfg)
    assert logged[-1][1]["train/loss"] < logged[0][1]["train/loss"]
    assert {record["lr"] for _, record in logged} == {cfg.lr}


def test_resnet34_unet_trains_with_the_recipe_options(tmp_path, tiny_data):
    cfg = CFG.model_copy(
        update=dict(
            epochs=2, loss="dice", optimizer="sgd", scheduler="onecycle", init="kaiming", zero_init_residual=True
        )
    )
    result, logged = _fit(tmp_path, tiny_data, cfg, name="resnet34_unet")
    _, ckpt = load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))
    assert ckpt["model"] == "resnet34_unet" and ckpt["valid_dice"] == result.best_valid_dice
    assert len(logged) == 2


def test_fit_starts_from_a_pretrained_encoder_file(tmp_path, tiny_data):
    torchvision = pytest.importorskip("torchvision")
    reference = torchvision.models.resnet34().state_dict()
    torch.save(reference, tmp_path / "resnet34.pth")
    # An lr this small leaves the convolutions where they started after one epoch.
    cfg = CFG.model_copy(update=dict(epochs=1, lr=1e-12, encoder_weights=str(tmp_path / "resnet34.pth")))
    _fit(tmp_path, tiny_data, cfg, name="resnet34_unet")
    trained = torch.load(tmp_path / "m.pt", weights_only=True)["state_dict"]
    for name in ("conv1.weight", "layer1.0.conv1.weight", "layer4.2.conv2.weight"):
        torch.testing.assert_close(trained[f"encoder.{name}"], reference[name], rtol=0, atol=1e-6)


def test_early_stopping_after_patience_epochs_without_a_better_valid_dice(tmp_path, tiny_data, monkeypatch):
    scores = iter([0.5, 0.6, 0.55, 0.58, 0.7, 0.8])
    monkeypatch.setattr(training, "validate", lambda *args: (1.0, next(scores)))
    result, logged = _fit(tmp_path, tiny_data, CFG.model_copy(update=dict(epochs=6, patience=2)))
    # Epoch 2 is the best; epochs 3 and 4 do not beat it, so training stops after epoch 4.
    assert [e for e, _ in logged] == [1, 2, 3, 4]
    assert (result.best_epoch, result.last_epoch, result.best_valid_dice) == (2, 4, 0.6)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == 2


def test_a_non_finite_loss_stops_with_epoch_and_step_and_keeps_the_last_good_checkpoint(
    tmp_path, tiny_data, monkeypatch
):
    calls = []

    def loss(logits, target):
        value = bce_loss(logits, target)
        if not torch.is_grad_enabled():  # validation
            return value
        calls.append(1)
        # 6 train images in batches of 2: 3 steps an epoch, so the 5th step is epoch 2's 2nd.
        return value * float("nan") if len(calls) == 5 else value

    monkeypatch.setitem(training.LOSSES, "bce", loss)
    with pytest.raises(UserError, match=r"non-finite at epoch 2, step 2; .*m.pt keeps the best weights"):
        _fit(tmp_path, tiny_data, CFG.model_copy(update=dict(loss="bce", batch_size=2)))
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == 1


class NoNorm(nn.Module):
    """A conv net without BatchNorm, so a batch's gradient does not depend on how it is split."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))

    def forward(self, x):
        return self.net(x)


def _one_update(batch_size, accumulate_steps, grad_clip=0.0, scale=1.0):
    """Parameters before and after one epoch of SGD (lr 1, no momentum) over 8 fixed images."""
    g = torch.Generator().manual_seed(1)
    images = torch.randn(8, 3, 8, 8, generator=g) * scale
    masks = (torch.rand(8, 1, 8, 8, generator=g) > 0.5).float()
    model = NoNorm()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.0)
    loader = DataLoader(TensorDataset(images, masks), batch_size=batch_size)
    groups = len(accumulation_groups(len(loader), accumulate_steps))
    schedule = LrSchedule("constant", optimizer, groups, 2)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    stats = train_epoch(model, loader, bce_loss, optimizer, schedule, scaler, CPU, None, accumulate_steps, grad_clip)
    return before, [p.detach() for p in model.parameters()], stats


def test_two_accumulated_batches_of_4_give_the_gradient_of_one_batch_of_8():
    before, big, stats_big = _one_update(8, 1)
    _, accumulated, stats_acc = _one_update(4, 2)
    for b, x, y in zip(before, big, accumulated, strict=True):
        assert not torch.equal(b, x)  # an update happened
        torch.testing.assert_close(x, y, rtol=0, atol=1e-5)
    assert stats_big.loss == pytest.approx(stats_acc.loss, abs=1e-6)


def test_accumulation_groups_keep_every_batch():
    assert accumulation_groups(10, 4) == [4, 4, 2]
    assert accumulation_groups(8, 4) == [4, 4]
    assert accumulation_groups(3, 1) == [1, 1, 1]


def test_gradient_clipping_bounds_the_update_norm():
    before, unclipped, _ = _one_update(8, 1, scale=10.0)
    norm = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(before, unclipped, strict=True)))
    assert norm > 0.5  # so a max norm of 0.05 really clips
    before, clipped, _ = _one_update(8, 1, grad_clip=0.05, scale=10.0)
    # With SGD at lr 1 the update is the (clipped) gradient itself.
    norm = torch.sqrt(sum(((a - b) ** 2).sum() for a, b in zip(before, clipped, strict=True)))
    assert norm == pytest.approx(0.05, rel=1e-4)


def test_compile_gives_the_results_of_eager_mode(tmp_path, tiny_data, monkeypatch):
    compiled_models = []

    def spy(model, *args, **kwargs):
        compiled_models.append(model)
        return real_compile(model, *args, **kwargs)

    real_compile = torch.compile
    monkeypatch.setattr(training.torch, "compile", spy)
    cfg = CFG.model_copy(update=dict(epochs=1, augment="none"))
    _, eager = _fit(tmp_path / "eager", tiny_data, cfg)
    assert compiled_models == []
    _, compiled = _fit(tmp_path / "compiled", tiny_data, cfg.model_copy(update=dict(compile=True)))
    assert len(compiled_models) == 1  # the model really went through torch.compile
    # Inductor fuses and reorders float operations, so equal only to within rounding.
    for (_, a), (_, b) in zip(_results(eager), _results(compiled), strict=True):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4) for k in a)
