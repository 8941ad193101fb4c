"""fit() (pipeline/train/fit.py): what each epoch logs, the checkpoint of the best valid Dice, early
stopping, resume, the config's options reaching the training, determinism, torch.compile and the moving
average of the weights."""

import copy
import random

import numpy as np
import pytest
import torch
from torch import nn

import pipeline.train.fit as training
import pipeline.train.losses as losses
import pipeline.train.setup as setup
from pipeline.core.errors import UserError
from pipeline.core.params import AugmentOptions
from pipeline.data.build import build_cache
from pipeline.data.classes import BINARY_PETS, Classes, classes_from_json
from pipeline.data.colour import MEAN, STD
from pipeline.data.masks import IGNORE
from pipeline.data.synthetic import make_synthetic_folder
from pipeline.evaluate.confusion import ConfusionMeter
from pipeline.evaluate.inference import predict_logits, prepare, torch_forward
from pipeline.models.checkpoint import load_checkpoint
from pipeline.models.registry import build_model
from pipeline.train.config import RunConfig, TrainConfig
from pipeline.train.fit import fit
from pipeline.train.losses import bce_loss
from pipeline.train.resume import load_state, save_state
from pipeline.train.setup import seed_everything
from tests.support import TINY_ARCH

CFG = TrainConfig(
    epochs=3,
    batch_size=4,
    lr=3e-3,
    weight_decay=0.0,
    scheduler="cosine",
    loss="ce_dice",
    seed=0,
    augment="full",
    num_workers=0,
)
# No augmentation and batches of 2: 3 optimiser steps an epoch on the 6 training images of tiny_data.
PLAIN = CFG.model_copy(update=dict(batch_size=2, augment="none"))


def _fit(tmp_path, tiny_data, cfg=CFG, name="unet", classes=BINARY_PETS, augment_on="workers", **kwargs):
    """fit() of a tiny ``name`` for ``classes`` on ``tiny_data`` into tmp_path/m.pt, augmenting on the loader's
    workers or the device (``augment_on``): its result and the (epoch, record) logged."""
    logged = []
    config = RunConfig(name, TINY_ARCH[name], cfg, tmp_path / "m.pt", classes, progress=False, augment_on=augment_on)
    result = fit(config, *tiny_data, lambda e, r: logged.append((e, r)), **kwargs)
    return result, logged


def _results(logged):
    """The logged records without the timings, which differ from run to run."""
    return [(e, {k: v for k, v in r.items() if not k.startswith("time/")}) for e, r in logged]


def _scores(monkeypatch, *dice):
    """Make each epoch's validation return the next of ``dice`` (and loss 1.0)."""
    values = iter(dice)
    monkeypatch.setattr(training, "validate", lambda *args: (1.0, {"dice": next(values)}))


def _weights(model_state):
    return {k: v.detach().clone() for k, v in model_state.items()}


# --- each epoch's record and the checkpoint of the best epoch ---------------------------------------


def test_fit_logs_every_epoch_and_keeps_the_best_valid_weights(tmp_path, tiny_data):
    result, logged = _fit(tmp_path, tiny_data)
    assert [epoch for epoch, _ in logged] == [1, 2, 3]
    assert set(logged[0][1]) == {"train/loss", "valid/loss", "valid/dice", "lr", "time/data_wait"}
    assert all(0 <= record["time/data_wait"] <= 1 for _, record in logged)
    dices = [record["valid/dice"] for _, record in logged]
    assert result.best_valid == max(dices)
    assert result.best_epoch == 1 + dices.index(max(dices))
    assert result.last_epoch == 3 and result.resumed_from == 0
    # The cosine schedule lowers the lr from one epoch to the next.
    lrs = [record["lr"] for _, record in logged]
    assert lrs[0] == CFG.lr and lrs[0] > lrs[1] > lrs[2]

    model, ckpt = load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))
    assert ckpt["epoch"] == result.best_epoch and ckpt["valid_dice"] == result.best_valid
    assert ckpt["image_size"] == 32 and ckpt["model"] == "unet"
    # The saved weights reproduce the logged valid Dice of the best epoch.
    images, masks = tiny_data[1]
    meter = ConfusionMeter(2)
    logits, _ = predict_logits(torch_forward(model, torch.device("cpu")), images, 4, "none")
    meter.update(torch.from_numpy(logits), torch.tensor(masks))
    assert meter.compute()["task"]["dice"] == pytest.approx(result.best_valid, abs=1e-6)


def test_the_checkpoint_holds_the_best_epochs_weights_not_the_last(tmp_path, tiny_data, monkeypatch):
    _scores(monkeypatch, 0.5, 0.9, 0.7)
    weights = []
    result, _ = _fit(tmp_path, tiny_data, PLAIN, save_state=lambda s: weights.append(_weights(s["model"])))
    assert (result.best_epoch, result.best_valid, result.last_epoch) == (2, 0.9, 3)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["valid_dice"]) == (2, 0.9)
    assert all(torch.equal(ckpt["state_dict"][k], weights[1][k]) for k in weights[1])
    assert not all(torch.equal(ckpt["state_dict"][k], weights[2][k]) for k in weights[2])


def test_the_logged_train_loss_is_the_epochs_mean_over_images(tmp_path, tiny_data, monkeypatch):
    # The sum of each batch's mean loss times its images, over the images seen (the training loader
    # drops a last, incomplete batch: 3 batches of 2 of the 6 training images).
    calls = []
    real = losses.BINARY_LOSSES["ce_dice"]

    def spy(logits, masks):
        loss = real(logits, masks)
        calls.append((float(loss.detach()), len(logits), torch.is_grad_enabled()))
        return loss

    monkeypatch.setitem(losses.BINARY_LOSSES, "ce_dice", spy)
    _, logged = _fit(tmp_path, tiny_data, PLAIN.model_copy(update=dict(epochs=1)))
    train = [(loss, n) for loss, n, grad in calls if grad]
    assert [n for _, n in train] == [2, 2, 2]
    expected = sum(loss * n for loss, n in train) / 6
    assert logged[0][1]["train/loss"] == pytest.approx(expected, rel=1e-6)
    assert logged[0][1]["valid/loss"] != pytest.approx(expected, rel=1e-3)  # not the valid pass's


def test_training_lowers_the_train_loss(tmp_path, tiny_data):
    cfg = CFG.model_copy(update=dict(epochs=6, augment="none", scheduler="constant"))
    _, logged = _fit(tmp_path, tiny_data, cfg)
    assert logged[-1][1]["train/loss"] < logged[0][1]["train/loss"]
    assert {record["lr"] for _, record in logged} == {cfg.lr}


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

    monkeypatch.setitem(losses.BINARY_LOSSES, "ce", loss)
    with pytest.raises(UserError, match=r"non-finite at epoch 2, step 2; .*m.pt keeps the best weights"):
        _fit(tmp_path, tiny_data, CFG.model_copy(update=dict(loss="ce", batch_size=2)))
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == 1


# --- determinism ------------------------------------------------------------------------------------


def test_seed_everything_makes_python_numpy_and_torch_draws_repeat():
    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(5)
    first = draws()
    random.seed(123), np.random.seed(123), torch.manual_seed(123)  # disturb every generator
    seed_everything(5)
    assert draws() == first
    seed_everything(6)
    assert all(a != b for a, b in zip(draws(), first, strict=True))


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


# --- early stopping ---------------------------------------------------------------------------------


def test_early_stopping_after_patience_epochs_without_a_better_valid_dice(tmp_path, tiny_data, monkeypatch):
    scores = iter([0.5, 0.6, 0.55, 0.58, 0.7, 0.8])
    monkeypatch.setattr(training, "validate", lambda *args: (1.0, {"dice": next(scores)}))
    result, logged = _fit(tmp_path, tiny_data, CFG.model_copy(update=dict(epochs=6, patience=2)))
    # Epoch 2 is the best; epochs 3 and 4 do not beat it, so training stops after epoch 4.
    assert [e for e, _ in logged] == [1, 2, 3, 4]
    assert (result.best_epoch, result.last_epoch, result.best_valid) == (2, 4, 0.6)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == 2


def test_an_equal_valid_dice_is_no_improvement(tmp_path, tiny_data, monkeypatch):
    # Patience counts epochs without a strictly better Dice: a tie keeps the earlier epoch.
    _scores(monkeypatch, 0.6, 0.6, 0.6, 0.9)
    result, logged = _fit(tmp_path, tiny_data, PLAIN.model_copy(update=dict(epochs=4, patience=2)))
    assert [e for e, _ in logged] == [1, 2, 3]
    assert (result.best_epoch, result.best_valid) == (1, 0.6)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == 1


# --- resume -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("ema", [0.0, 0.5], ids=["plain", "ema"])
def test_resuming_from_a_saved_state_continues_exactly_like_the_uninterrupted_run(tmp_path, tiny_data, ema):
    cfg = PLAIN.model_copy(update=dict(augment="full", epochs=3, ema=ema))
    states = []
    whole, logged = _fit(tmp_path / "whole", tiny_data, cfg, save_state=lambda s: states.append(copy.deepcopy(s)))
    # Through the file, as a killed run's state comes back (weights_only: the average's state loads too).
    save_state(tmp_path / "state.pt", states[0], {})
    state, _ = load_state(tmp_path / "state.pt", {})
    assert ("ema" in state) == (ema > 0)
    resumed, resumed_logged = _fit(tmp_path / "resumed", tiny_data, cfg, state=state)
    assert _results(resumed_logged) == _results(logged)[1:]
    assert (resumed.best_valid, resumed.best_epoch, resumed.last_epoch) == (
        whole.best_valid,
        whole.best_epoch,
        whole.last_epoch,
    )
    assert resumed.resumed_from == 1
    a = torch.load(tmp_path / "whole" / "m.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "m.pt", weights_only=True)
    assert (a["epoch"], a["valid_dice"]) == (b["epoch"], b["valid_dice"])
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_a_run_augmented_on_the_device_killed_and_resumed_ends_as_the_uninterrupted_one(tmp_path, tiny_data):
    cfg = PLAIN.model_copy(update=dict(augment="full", epochs=2, augmentation=AugmentOptions(degrees=20)))
    states = []

    def save_then_die(state):
        states.append(copy.deepcopy(state))
        raise KeyboardInterrupt

    _, logged = _fit(tmp_path / "whole", tiny_data, cfg, augment_on="device")
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "killed", tiny_data, cfg, augment_on="device", save_state=save_then_die)
    _, resumed = _fit(tmp_path / "killed", tiny_data, cfg, augment_on="device", state=states[0])
    assert _results(resumed) == _results(logged)[1:]
    a = torch.load(tmp_path / "whole" / "m.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "killed" / "m.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    _, on_workers = _fit(tmp_path / "workers", tiny_data, cfg)
    assert _results(on_workers) != _results(logged)  # the device path ran: its resampling differs


def test_a_resumed_run_remembers_the_best_epoch_and_the_patience_spent(tmp_path, tiny_data, monkeypatch):
    # Epoch 1 is the best; the run is killed after epoch 2 (one epoch of patience spent). Resumed, it
    # rewrites the checkpoint with epoch 1's weights, trains epoch 3, which is again no better, and stops.
    cfg = PLAIN.model_copy(update=dict(epochs=5, patience=2))
    states = []

    def save_then_die(state):
        states.append(copy.deepcopy(state))
        if len(states) == 2:
            raise KeyboardInterrupt

    _scores(monkeypatch, 0.8, 0.5)
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "first", tiny_data, cfg, save_state=save_then_die)
    killed = states[-1]
    best_weights = _weights(killed["best_weights"])
    # The state holds epoch 1's weights as they were then (a copy, not the live model of epoch 2).
    epoch_1 = torch.load(tmp_path / "first" / "m.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(epoch_1[k], best_weights[k]) for k in best_weights)
    _scores(monkeypatch, 0.7, 0.9)
    result, logged = _fit(tmp_path, tiny_data, cfg, state=killed)
    assert [e for e, _ in logged] == [3]
    assert (result.best_epoch, result.best_valid, result.last_epoch, result.resumed_from) == (1, 0.8, 3, 2)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["valid_dice"]) == (1, 0.8)
    assert all(torch.equal(ckpt["state_dict"][k], best_weights[k]) for k in best_weights)


def test_a_run_that_stopped_early_does_nothing_when_resumed(tmp_path, tiny_data, monkeypatch):
    states = []
    _scores(monkeypatch, 0.8, 0.5)
    _fit(tmp_path / "first", tiny_data, PLAIN.model_copy(update=dict(epochs=4, patience=1)), save_state=states.append)
    assert states[-1]["stopped"] and states[-1]["epoch"] == 2
    result, logged = _fit(tmp_path, tiny_data, PLAIN.model_copy(update=dict(epochs=4, patience=1)), state=states[-1])
    assert logged == []
    assert (result.best_epoch, result.last_epoch, result.resumed_from) == (1, 2, 2)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == 1


def test_the_resume_state_keeps_the_entry_names_earlier_states_were_saved_with(tmp_path, tiny_data):
    # A state file written by an earlier version is resumed if its fingerprint inputs match, so the
    # entries fit() reads back must keep their names.
    states = []
    _fit(tmp_path, tiny_data, PLAIN.model_copy(update=dict(epochs=2)), save_state=states.append)
    parts = {"model", "optimizer", "schedule", "scaler", "sampler", "rng"}
    best = {"best", "best_epoch", "since_best", "best_scores", "best_weights"}
    assert set(states[-1]) == parts | best | {"epoch", "stopped"}
    assert (states[-1]["epoch"], states[-1]["stopped"]) == (2, False)


# --- the moving average of the weights (ema) ---------------------------------------------------------


def _fit_watched(tmp_path, tiny_data, monkeypatch, cfg):
    """_fit() of ``cfg``, keeping the run set_up() built and each module validate() was given."""
    runs, validated = [], []
    real_set_up, real_validate = training.set_up, training.validate
    monkeypatch.setattr(training, "set_up", lambda *args: runs.append(real_set_up(*args)) or runs[-1])
    monkeypatch.setattr(training, "validate", lambda model, *a: validated.append(model) or real_validate(model, *a))
    _fit(tmp_path, tiny_data, cfg)
    return runs[0], validated


def _equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_with_ema_the_average_is_validated_and_saved_and_the_training_is_unchanged(tmp_path, tiny_data, monkeypatch):
    cfg = PLAIN.model_copy(update=dict(epochs=1))
    plain, plain_validated = _fit_watched(tmp_path / "plain", tiny_data, monkeypatch, cfg)
    assert plain.step.ema is None and plain_validated == [plain.model]  # ema 0: no average built
    assert _equal(torch.load(tmp_path / "plain" / "m.pt", weights_only=True)["state_dict"], plain.model.state_dict())
    run, validated = _fit_watched(tmp_path / "ema", tiny_data, monkeypatch, cfg.model_copy(update=dict(ema=0.5)))
    averaged = run.step.ema.averaged.module
    assert len(validated) == 1 and validated[0] is averaged
    saved = torch.load(tmp_path / "ema" / "m.pt", weights_only=True)["state_dict"]
    assert _equal(saved, averaged.state_dict())
    assert not _equal(saved, run.model.state_dict())
    # The average only reads the weights: the model trains as without it.
    assert _equal(run.model.state_dict(), plain.model.state_dict())


# --- the config reaches the training ----------------------------------------------------------------


def test_resnet34_unet_trains_with_the_recipe_options(tmp_path, tiny_data):
    cfg = CFG.model_copy(
        update=dict(
            epochs=2, loss="dice", optimizer="sgd", scheduler="onecycle", init="kaiming", zero_init_residual=True
        )
    )
    result, logged = _fit(tmp_path, tiny_data, cfg, name="resnet34_unet")
    _, ckpt = load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))
    assert ckpt["model"] == "resnet34_unet" and ckpt["valid_dice"] == result.best_valid
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


class Spy(nn.Module):
    """A small UNet that records the images of every training batch it sees."""

    def __init__(self):
        super().__init__()
        self.unet = build_model("unet", **TINY_ARCH["unet"])
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.unet(x)


def _train_inputs(tmp_path, tiny_data, monkeypatch, cfg, augment_on="workers"):
    spy = Spy()
    monkeypatch.setattr(setup, "build_model", lambda name, out_channels, **arch: spy)
    _fit(tmp_path, tiny_data, cfg, augment_on=augment_on)
    images = torch.tensor(tiny_data[0][0]).permute(0, 3, 1, 2).float() / 255
    originals = (images - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    return torch.cat(spy.seen), originals


def _matches(image, candidates):
    return any(torch.allclose(image, c, atol=1e-5) for c in candidates)


def test_the_full_augmentation_and_its_options_reach_the_training_batches(tmp_path, tiny_data, monkeypatch):
    # Vertical flips only (no horizontal flip, no crop, no jitter): every training image is a cached
    # image, upright or upside down, and both occur.
    options = AugmentOptions(hflip=False, vflip=True, crop_scale=(1.0, 1.0), jitter=0.0)
    cfg = PLAIN.model_copy(update=dict(epochs=2, augment="full", augmentation=options))
    seen, originals = _train_inputs(tmp_path, tiny_data, monkeypatch, cfg)
    upright = [_matches(x, originals) for x in seen]
    flipped = [_matches(x, originals.flip(-2)) for x in seen]
    assert all(u or f for u, f in zip(upright, flipped, strict=True))
    assert any(upright) and any(flipped)


@pytest.mark.parametrize("augment_on", ["workers", "device"])
def test_no_augmentation_trains_on_the_cached_images(tmp_path, tiny_data, monkeypatch, augment_on):
    cfg = PLAIN.model_copy(update=dict(epochs=1))
    seen, originals = _train_inputs(tmp_path, tiny_data, monkeypatch, cfg, augment_on)
    assert len(seen) > 0 and all(_matches(x, originals) for x in seen)


def test_flips_on_the_device_reach_the_training_batches(tmp_path, tiny_data, monkeypatch):
    options = AugmentOptions(hflip=False, vflip=True, crop_scale=(1.0, 1.0), jitter=0.0)
    cfg = PLAIN.model_copy(update=dict(epochs=2, augment="full", augmentation=options))
    seen, originals = _train_inputs(tmp_path, tiny_data, monkeypatch, cfg, "device")
    flipped = [_matches(x, originals.flip(-2)) for x in seen]
    assert all(f or _matches(x, originals) for x, f in zip(seen, flipped, strict=True)) and any(flipped)


def test_warmup_starts_below_the_peak_lr_and_reaches_it(tmp_path, tiny_data):
    cfg = PLAIN.model_copy(update=dict(scheduler="constant", warmup_epochs=1.0))
    _, logged = _fit(tmp_path, tiny_data, cfg)
    lrs = [record["lr"] for _, record in logged]
    assert lrs[0] < cfg.lr and lrs[1] == lrs[2] == cfg.lr


def test_the_plateau_schedule_halves_the_lr_when_valid_dice_stalls(tmp_path, tiny_data, monkeypatch):
    # Valid Dice never improves after epoch 1: the 4th epoch without improvement (epoch 5) lowers the lr.
    _scores(monkeypatch, *[0.5] * 6)
    _, logged = _fit(tmp_path, tiny_data, PLAIN.model_copy(update=dict(epochs=6, scheduler="plateau")))
    assert [record["lr"] for _, record in logged] == [PLAIN.lr] * 5 + [PLAIN.lr / 2]


def _parameter_change(tmp_path, tiny_data, cfg):
    states = []
    _fit(tmp_path, tiny_data, cfg.model_copy(update=dict(epochs=1)), save_state=states.append)
    seed_everything(cfg.seed)
    start = build_model("unet", **TINY_ARCH["unet"]).state_dict()
    end = states[0]["model"]
    convs = [k for k in start if k.endswith("weight") and start[k].dim() == 4]
    before = torch.sqrt(sum((start[k] ** 2).sum() for k in convs))
    after = torch.sqrt(sum((end[k] ** 2).sum() for k in convs))
    step = torch.sqrt(sum(((end[k] - start[k]) ** 2).sum() for k in convs))
    return float(before), float(after), float(step)


def test_weight_decay_from_the_config_shrinks_the_weights(tmp_path, tiny_data):
    before, plain, _ = _parameter_change(tmp_path / "0", tiny_data, PLAIN)
    _, decayed, _ = _parameter_change(tmp_path / "1", tiny_data, PLAIN.model_copy(update=dict(weight_decay=60.0)))
    # AdamW multiplies the weights by (1 - lr * weight_decay) = 0.82 every step: 0.55 over 3 steps.
    assert decayed < 0.7 * plain and decayed < 0.7 * before


def test_sgd_momentum_from_the_config_speeds_up_the_updates(tmp_path, tiny_data):
    sgd = PLAIN.model_copy(update=dict(optimizer="sgd", lr=0.05, scheduler="constant"))
    _, _, slow = _parameter_change(tmp_path / "0", tiny_data, sgd.model_copy(update=dict(momentum=0.0)))
    _, _, fast = _parameter_change(tmp_path / "9", tiny_data, sgd.model_copy(update=dict(momentum=0.9)))
    assert fast > 1.3 * slow


def test_zero_init_residual_is_passed_to_the_initialisation(tmp_path, tiny_data):
    # The UNet has no residual blocks, so asking for zero_init_residual is refused rather than ignored.
    with pytest.raises(UserError, match="zero_init_residual"):
        _fit(tmp_path, tiny_data, PLAIN.model_copy(update=dict(zero_init_residual=True)))


# --- torch.compile ----------------------------------------------------------------------------------


class _Compiled(nn.Module):
    """A stand-in for torch.compile's wrapper (the real one is slow: tested below) that records whether
    each call was in training mode."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.calls = model, []

    def forward(self, x):
        self.calls.append(self.training)
        return self.model(x)


def test_compile_true_trains_the_compiled_model_and_validates_the_eager_one(tmp_path, tiny_data, monkeypatch):
    compiled = []
    monkeypatch.setattr(setup.torch, "compile", lambda model, *a, **k: compiled.append(_Compiled(model)) or compiled[0])
    _fit(tmp_path, tiny_data, PLAIN.model_copy(update=dict(epochs=2, compile=True)))
    assert len(compiled) == 1 and isinstance(compiled[0].model, nn.Module)
    # 6 train images at batch 2, two epochs; validation (eval mode) never reaches the compiled model, which
    # would compile again for eval mode and for each new valid shape.
    assert compiled[0].calls == [True] * 6


@pytest.mark.parametrize("asked", [False, "auto"])
def test_compile_false_and_auto_on_a_cpu_never_compile(tmp_path, tiny_data, monkeypatch, asked):
    compiled = []
    monkeypatch.setattr(setup.torch, "compile", lambda model, *a, **k: compiled.append(model) or model)
    _fit(tmp_path, tiny_data, PLAIN.model_copy(update=dict(epochs=1, compile=asked)))
    assert compiled == []


def test_a_test_not_marked_compiles_cannot_compile():
    # tests/conftest.py's guard: the suite's tiny trainings fail rather than spend minutes compiling.
    with pytest.raises(AssertionError, match="not marked `compiles`"):
        torch.compile(nn.Linear(1, 1))


@pytest.mark.slow
@pytest.mark.compiles
def test_compile_gives_the_results_of_eager_mode(tmp_path, tiny_data, monkeypatch):
    compiled_models = []

    def spy(model, *args, **kwargs):
        compiled_models.append(model)
        return real_compile(model, *args, **kwargs)

    real_compile = torch.compile
    monkeypatch.setattr(setup.torch, "compile", spy)
    cfg = CFG.model_copy(update=dict(epochs=1, augment="none"))
    _, eager = _fit(tmp_path / "eager", tiny_data, cfg)
    assert compiled_models == []
    _, compiled = _fit(tmp_path / "compiled", tiny_data, cfg.model_copy(update=dict(compile=True)))
    assert len(compiled_models) == 1  # the model really went through torch.compile
    # Inductor fuses and reorders float operations, so equal only to within rounding.
    for (_, a), (_, b) in zip(_results(eager), _results(compiled), strict=True):
        assert a.keys() == b.keys()
        assert all(a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-4) for k in a)


# --- multi-class tasks --------------------------------------------------------------------------------

TRIMAP_CLASSES = Classes(("background", "pet", "boundary"))


def _three_class(tiny_data):
    """tiny_data's masks as three classes: its pet (1), background (0) and a boundary (2) where a pixel's
    right-hand neighbour differs; ignored pixels stay 255."""
    out = []
    for images, masks in tiny_data:
        labels = masks.copy()
        edge = np.zeros_like(masks, dtype=bool)
        edge[:, :, :-1] = (masks[:, :, :-1] != masks[:, :, 1:]) & (masks[:, :, :-1] != IGNORE)
        labels[edge] = 2
        out.append((images, labels))
    return out


def test_a_multi_class_fit_has_c_logits_logs_miou_and_keeps_the_best_valid_miou(tmp_path, tiny_data):
    result, logged = _fit(tmp_path, _three_class(tiny_data), PLAIN, classes=TRIMAP_CLASSES)
    assert {"valid/dice", "valid/miou"} <= set(logged[0][1])
    mious = [record["valid/miou"] for _, record in logged]
    assert result.metric == "miou" and result.best_valid == max(mious)
    model, ckpt = load_checkpoint(tmp_path / "m.pt", torch.device("cpu"))
    assert ckpt["out_channels"] == 3 and classes_from_json(ckpt["classes"]) == TRIMAP_CLASSES
    assert ckpt["valid_miou"] == result.best_valid
    images, masks = _three_class(tiny_data)[1]
    with torch.no_grad():
        logits = model(torch.from_numpy(prepare(images)))
    assert logits.shape == (len(images), 3, 32, 32)
    # The saved weights reproduce the logged valid mIoU of the best epoch, from one confusion matrix.
    meter = ConfusionMeter(3)
    meter.update(logits, torch.tensor(masks)[:, None])
    assert meter.compute()["miou"] == pytest.approx(result.best_valid, abs=1e-6)


def test_a_multi_class_checkpoint_is_chosen_by_miou_not_dice(tmp_path, tiny_data, monkeypatch):
    scores = iter([{"dice": 0.9, "miou": 0.4}, {"dice": 0.5, "miou": 0.6}, {"dice": 0.95, "miou": 0.5}])
    monkeypatch.setattr(training, "validate", lambda *args: (1.0, next(scores)))
    result, _ = _fit(tmp_path, _three_class(tiny_data), PLAIN, classes=TRIMAP_CLASSES)
    assert (result.best_epoch, result.best_valid) == (2, 0.6)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["valid_miou"], ckpt["valid_dice"]) == (2, 0.6, 0.5)


def test_a_two_class_folder_trains_as_a_binary_task(tmp_path):
    make_synthetic_folder(tmp_path / "shapes", 8, seed=0, classes=2)
    split = build_cache(tmp_path / "shapes", [f"shape_{i}" for i in range(8)], 32, "pet", progress=False)
    assert split.classes.names == ("background", "part1") and split.classes.binary
    data = (split.images[:6], split.masks[:6]), (split.images[6:], split.masks[6:])
    result, logged = _fit(tmp_path, data, PLAIN.model_copy(update=dict(epochs=1)), classes=split.classes)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert result.metric == "dice" and ckpt["out_channels"] == 1 and "valid/miou" not in logged[0][1]
    assert classes_from_json(ckpt["classes"]) == split.classes
