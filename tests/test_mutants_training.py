"""Behaviour the mutation run (docs/mutation.md) found untested in pipeline/train/fit.py."""

import copy
import random

import numpy as np
import pytest
import torch
from torch import nn

import pipeline.train.fit as training
from pipeline.core.errors import UserError
from pipeline.core.params import AugmentOptions
from pipeline.data.dataset import MEAN, STD
from pipeline.models.registry import build_model
from pipeline.train.config import TrainConfig
from pipeline.train.fit import seed_everything
from tests.test_training import _fit as fit_tiny
from tests.test_training import _results

CFG = TrainConfig(
    epochs=3,
    batch_size=2,  # 3 optimiser steps an epoch on the 6 training images
    lr=3e-3,
    weight_decay=0.0,
    scheduler="cosine",
    loss="bce_dice",
    seed=0,
    augment="none",
    num_workers=0,
)


def _fit(tmp_path, tiny_data, cfg=CFG, **kwargs):
    """tests.test_training's tiny fit, with this file's config (no augmentation, batch 2) by default."""
    return fit_tiny(tmp_path, tiny_data, cfg, **kwargs)


def _scores(monkeypatch, *dice):
    """Make each epoch's validation return the next of ``dice`` (and loss 1.0)."""
    values = iter(dice)
    monkeypatch.setattr(training, "validate", lambda *args: (1.0, next(values)))


def _weights(model_state):
    return {k: v.detach().clone() for k, v in model_state.items()}


# --- seeding --------------------------------------------------------------------------------------


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


# --- the best epoch -------------------------------------------------------------------------------


def test_the_checkpoint_holds_the_best_epochs_weights_not_the_last(tmp_path, tiny_data, monkeypatch):
    _scores(monkeypatch, 0.5, 0.9, 0.7)
    weights = []
    result, _ = _fit(tmp_path, tiny_data, save_state=lambda s: weights.append(_weights(s["model"])))
    assert (result.best_epoch, result.best_valid_dice, result.last_epoch) == (2, 0.9, 3)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["valid_dice"]) == (2, 0.9)
    assert all(torch.equal(ckpt["state_dict"][k], weights[1][k]) for k in weights[1])
    assert not all(torch.equal(ckpt["state_dict"][k], weights[2][k]) for k in weights[2])


def test_an_equal_valid_dice_is_no_improvement(tmp_path, tiny_data, monkeypatch):
    # Patience counts epochs without a strictly better Dice: a tie keeps the earlier epoch.
    _scores(monkeypatch, 0.6, 0.6, 0.6, 0.9)
    result, logged = _fit(tmp_path, tiny_data, CFG.model_copy(update=dict(epochs=4, patience=2)))
    assert [e for e, _ in logged] == [1, 2, 3]
    assert (result.best_epoch, result.best_valid_dice) == (1, 0.6)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == 1


# --- resume ---------------------------------------------------------------------------------------


def test_resuming_from_a_saved_state_continues_exactly_like_the_uninterrupted_run(tmp_path, tiny_data):
    cfg = CFG.model_copy(update=dict(augment="full", epochs=3))
    states = []
    whole, logged = _fit(tmp_path / "whole", tiny_data, cfg, save_state=lambda s: states.append(copy.deepcopy(s)))
    resumed, resumed_logged = _fit(tmp_path / "resumed", tiny_data, cfg, state=states[0])
    assert _results(resumed_logged) == _results(logged)[1:]
    assert (resumed.best_valid_dice, resumed.best_epoch, resumed.last_epoch) == (
        whole.best_valid_dice,
        whole.best_epoch,
        whole.last_epoch,
    )
    assert resumed.resumed_from == 1
    a = torch.load(tmp_path / "whole" / "m.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed" / "m.pt", weights_only=True)
    assert (a["epoch"], a["valid_dice"]) == (b["epoch"], b["valid_dice"])
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])


def test_a_resumed_run_remembers_the_best_epoch_and_the_patience_spent(tmp_path, tiny_data, monkeypatch):
    # Epoch 1 is the best; the run is killed after epoch 2 (one epoch of patience spent). Resumed, it
    # rewrites the checkpoint with epoch 1's weights, trains epoch 3, which is again no better, and stops.
    cfg = CFG.model_copy(update=dict(epochs=5, patience=2))
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
    assert (result.best_epoch, result.best_valid_dice, result.last_epoch, result.resumed_from) == (1, 0.8, 3, 2)
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)
    assert (ckpt["epoch"], ckpt["valid_dice"]) == (1, 0.8)
    assert all(torch.equal(ckpt["state_dict"][k], best_weights[k]) for k in best_weights)


def test_a_run_that_stopped_early_does_nothing_when_resumed(tmp_path, tiny_data, monkeypatch):
    states = []
    _scores(monkeypatch, 0.8, 0.5)
    _fit(tmp_path / "first", tiny_data, CFG.model_copy(update=dict(epochs=4, patience=1)), save_state=states.append)
    assert states[-1]["stopped"] and states[-1]["epoch"] == 2
    result, logged = _fit(tmp_path, tiny_data, CFG.model_copy(update=dict(epochs=4, patience=1)), state=states[-1])
    assert logged == []
    assert (result.best_epoch, result.last_epoch, result.resumed_from) == (1, 2, 2)
    assert torch.load(tmp_path / "m.pt", weights_only=True)["epoch"] == 1


# --- the config reaches the training --------------------------------------------------------------


class Spy(nn.Module):
    """A small UNet that records the images of every training batch it sees."""

    def __init__(self):
        super().__init__()
        self.unet = build_model("unet", base_channels=4)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        if self.training:
            self.seen.append(x.detach().clone())
        return self.unet(x)


def _train_inputs(tmp_path, tiny_data, monkeypatch, cfg):
    spy = Spy()
    monkeypatch.setattr(training, "build_model", lambda name, **arch: spy)
    _fit(tmp_path, tiny_data, cfg)
    images = torch.from_numpy(tiny_data[0][0]).permute(0, 3, 1, 2).float() / 255
    originals = (images - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    return torch.cat(spy.seen), originals


def _matches(image, candidates):
    return any(torch.allclose(image, c, atol=1e-5) for c in candidates)


def test_the_full_augmentation_and_its_options_reach_the_training_batches(tmp_path, tiny_data, monkeypatch):
    # Vertical flips only (no horizontal flip, no crop, no jitter): every training image is a cached
    # image, upright or upside down, and both occur.
    options = AugmentOptions(hflip=False, vflip=True, crop_scale=(1.0, 1.0), jitter=0.0)
    cfg = CFG.model_copy(update=dict(epochs=2, augment="full", augmentation=options))
    seen, originals = _train_inputs(tmp_path, tiny_data, monkeypatch, cfg)
    upright = [_matches(x, originals) for x in seen]
    flipped = [_matches(x, originals.flip(-2)) for x in seen]
    assert all(u or f for u, f in zip(upright, flipped, strict=True))
    assert any(upright) and any(flipped)


def test_no_augmentation_trains_on_the_cached_images(tmp_path, tiny_data, monkeypatch):
    seen, originals = _train_inputs(tmp_path, tiny_data, monkeypatch, CFG.model_copy(update=dict(epochs=1)))
    assert len(seen) > 0 and all(_matches(x, originals) for x in seen)


def test_warmup_starts_below_the_peak_lr_and_reaches_it(tmp_path, tiny_data):
    cfg = CFG.model_copy(update=dict(scheduler="constant", warmup_epochs=1.0))
    _, logged = _fit(tmp_path, tiny_data, cfg)
    lrs = [record["lr"] for _, record in logged]
    assert lrs[0] < cfg.lr and lrs[1] == lrs[2] == cfg.lr


def test_the_plateau_schedule_halves_the_lr_when_valid_dice_stalls(tmp_path, tiny_data, monkeypatch):
    # Valid Dice never improves after epoch 1: the 4th epoch without improvement (epoch 5) lowers the lr.
    _scores(monkeypatch, *[0.5] * 6)
    _, logged = _fit(tmp_path, tiny_data, CFG.model_copy(update=dict(epochs=6, scheduler="plateau")))
    assert [record["lr"] for _, record in logged] == [CFG.lr] * 5 + [CFG.lr / 2]


def _parameter_change(tmp_path, tiny_data, cfg):
    states = []
    _fit(tmp_path, tiny_data, cfg.model_copy(update=dict(epochs=1)), save_state=states.append)
    seed_everything(cfg.seed)
    start = build_model("unet", base_channels=4).state_dict()
    end = states[0]["model"]
    convs = [k for k in start if k.endswith("weight") and start[k].dim() == 4]
    before = torch.sqrt(sum((start[k] ** 2).sum() for k in convs))
    after = torch.sqrt(sum((end[k] ** 2).sum() for k in convs))
    step = torch.sqrt(sum(((end[k] - start[k]) ** 2).sum() for k in convs))
    return float(before), float(after), float(step)


def test_weight_decay_from_the_config_shrinks_the_weights(tmp_path, tiny_data):
    before, plain, _ = _parameter_change(tmp_path / "0", tiny_data, CFG)
    _, decayed, _ = _parameter_change(tmp_path / "1", tiny_data, CFG.model_copy(update=dict(weight_decay=60.0)))
    # AdamW multiplies the weights by (1 - lr * weight_decay) = 0.82 every step: 0.55 over 3 steps.
    assert decayed < 0.7 * plain and decayed < 0.7 * before


def test_sgd_momentum_from_the_config_speeds_up_the_updates(tmp_path, tiny_data):
    sgd = CFG.model_copy(update=dict(optimizer="sgd", lr=0.05, scheduler="constant"))
    _, _, slow = _parameter_change(tmp_path / "0", tiny_data, sgd.model_copy(update=dict(momentum=0.0)))
    _, _, fast = _parameter_change(tmp_path / "9", tiny_data, sgd.model_copy(update=dict(momentum=0.9)))
    assert fast > 1.3 * slow


def test_compile_true_trains_the_compiled_model(tmp_path, tiny_data, monkeypatch):
    compiled = []

    def fake_compile(model, *args, **kwargs):  # torch.compile itself is slow; the real one is in test_training.py
        compiled.append(model)
        return model

    monkeypatch.setattr(training.torch, "compile", fake_compile)
    _fit(tmp_path, tiny_data, CFG.model_copy(update=dict(epochs=1, compile=True)))
    assert len(compiled) == 1 and isinstance(compiled[0], nn.Module)


def test_zero_init_residual_is_passed_to_the_initialisation(tmp_path, tiny_data):
    # The UNet has no residual blocks, so asking for zero_init_residual is refused rather than ignored.
    with pytest.raises(UserError, match="zero_init_residual"):
        _fit(tmp_path, tiny_data, CFG.model_copy(update=dict(zero_init_residual=True)))


def test_the_logged_train_loss_is_the_epochs_mean_over_images(tmp_path, tiny_data, monkeypatch):
    # The sum of each batch's mean loss times its images, over the images seen (the training loader
    # drops a last, incomplete batch: 3 batches of 2 of the 6 training images).
    calls = []
    real = training.LOSSES["bce_dice"]

    def spy(logits, masks):
        loss = real(logits, masks)
        calls.append((float(loss), len(logits), torch.is_grad_enabled()))
        return loss

    monkeypatch.setitem(training.LOSSES, "bce_dice", spy)
    _, logged = _fit(tmp_path, tiny_data, CFG.model_copy(update=dict(epochs=1)))
    train = [(loss, n) for loss, n, grad in calls if grad]
    assert [n for _, n in train] == [2, 2, 2]
    expected = sum(loss * n for loss, n in train) / 6
    assert logged[0][1]["train/loss"] == pytest.approx(expected, rel=1e-6)
    assert logged[0][1]["valid/loss"] != pytest.approx(expected, rel=1e-3)  # not the valid pass's


def test_compile_false_never_compiles(tmp_path, tiny_data, monkeypatch):
    compiled = []
    monkeypatch.setattr(training.torch, "compile", lambda model, *a, **k: compiled.append(model) or model)
    _fit(tmp_path, tiny_data, CFG.model_copy(update=dict(epochs=1, compile=False)))
    assert compiled == []
