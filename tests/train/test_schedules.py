import io
import math

import pytest
import torch

from pipeline.core.errors import UserError
from pipeline.train.schedules import PLATEAU_FACTOR, PLATEAU_PATIENCE, LrSchedule, make_optimizer

LR = 0.1


def _optimizer(name="adamw", lr=LR):
    return make_optimizer(name, torch.nn.Linear(2, 1).parameters(), lr=lr, weight_decay=0.01)


def _lrs(schedule, steps):
    """The lr used by each of the next ``steps`` optimiser steps."""
    lrs = []
    for _ in range(steps):
        lrs.append(schedule.lr)
        schedule.optimizer.step()
        schedule.step()
    return lrs


def _cos_anneal(start, end, pct):
    # Smith & Topin's cosine interpolation from start (pct 0) to end (pct 1).
    return end + (start - end) * (1 + math.cos(math.pi * pct)) / 2


# --- optimisers ---


@pytest.mark.parametrize("momentum", [0.9, 0.5])
def test_sgd_uses_heavy_ball_momentum_not_nesterov(momentum):
    weight = torch.nn.Parameter(torch.zeros(1))
    args = {} if momentum == 0.9 else {"momentum": momentum}  # 0.9 is the default
    optimizer = make_optimizer("sgd", [weight], lr=0.1, weight_decay=0.0, **args)
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert group["momentum"] == momentum and group["nesterov"] is False and group["dampening"] == 0
    for _ in range(2):
        weight.grad = torch.ones(1)
        optimizer.step()
    # Velocity 1, then momentum * 1 + 1; Nesterov would step by 1 + momentum, then more.
    assert weight.item() == pytest.approx(-0.1 * (1 + (momentum + 1)), rel=1e-6)


def test_adamw_decays_the_weights_decoupled_from_the_gradient():
    weight = torch.nn.Parameter(torch.ones(1))
    optimizer = make_optimizer("adamw", [weight], lr=0.1, weight_decay=0.5)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert optimizer.param_groups[0]["lr"] == 0.1 and optimizer.param_groups[0]["weight_decay"] == 0.5
    weight.grad = torch.zeros(1)
    optimizer.step()
    # Decoupled: w * (1 - lr * wd) with no Adam step for a zero gradient. Adam with an L2 term would
    # see gradient 0.5 and move by lr, to 0.9.
    assert weight.item() == pytest.approx(1 - 0.1 * 0.5, rel=1e-6)


def test_an_unknown_optimizer_is_a_one_line_user_error_naming_the_valid_ones():
    with pytest.raises(UserError, match="adamw, sgd; got 'adam'") as err:
        make_optimizer("adam", torch.nn.Linear(2, 1).parameters(), lr=LR, weight_decay=0.0)
    assert "\n" not in str(err.value)


# --- schedules ---


@pytest.mark.parametrize(("steps_per_epoch", "epochs"), [(1, 1), (3, 4), (7, 5)])
def test_cosine_without_warmup_matches_torch_cosine_annealing(steps_per_epoch, epochs):
    total = steps_per_epoch * epochs
    reference = _optimizer()
    torch_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=total)
    expected = []
    for _ in range(total + 1):
        expected.append(reference.param_groups[0]["lr"])
        reference.step()
        torch_schedule.step()
    schedule = LrSchedule("cosine", _optimizer(), steps_per_epoch, epochs)
    got = _lrs(schedule, total) + [schedule.lr]
    assert got == pytest.approx(expected, rel=1e-12, abs=LR * 1e-15)
    assert got[-1] == 0.0


def test_cosine_warms_up_linearly_then_anneals_to_zero():
    # 4 warmup steps, then 16 cosine steps.
    schedule = LrSchedule("cosine", _optimizer(), steps_per_epoch=4, epochs=5, warmup_epochs=1.0)
    lrs = _lrs(schedule, 20)
    assert lrs[0] == pytest.approx(LR / 4, rel=1e-12)
    assert lrs[1] == pytest.approx(LR / 2, rel=1e-12)
    assert lrs[3] == pytest.approx(LR, rel=1e-12)  # last warmup step
    assert lrs[4] == pytest.approx(LR, rel=1e-12)  # first cosine step
    assert lrs[12] == pytest.approx(LR / 2, rel=1e-12)  # half way through the cosine
    assert lrs[19] == pytest.approx(LR * (1 + math.cos(math.pi * 15 / 16)) / 2, rel=1e-12)
    assert 0 < lrs[19] < lrs[18]
    assert schedule.lr == pytest.approx(0.0, abs=LR * 1e-15)
    # Unlike CosineAnnealingLR, whose lr rises again after T_max, it stays at 0.
    assert max(_lrs(schedule, 5)) == pytest.approx(0.0, abs=LR * 1e-15)


@pytest.mark.parametrize(
    ("warmup_epochs", "warmup"),
    [(0.0, []), (0.1, []), (0.625, [LR / 3, 2 * LR / 3])],  # 0.4 steps round to 0; 2.5 round up to 3
)
def test_constant_holds_lr_after_its_warmup(warmup_epochs, warmup):
    schedule = LrSchedule("constant", _optimizer(), steps_per_epoch=4, epochs=3, warmup_epochs=warmup_epochs)
    assert _lrs(schedule, 12) == pytest.approx(warmup + [LR] * (12 - len(warmup)), rel=1e-12)


@pytest.mark.parametrize("optimizer_name", ["adamw", "sgd"])
def test_onecycle_with_warmup_peaks_at_the_last_warmup_step(optimizer_name):
    optimizer = _optimizer(optimizer_name)
    schedule = LrSchedule("onecycle", optimizer, steps_per_epoch=4, epochs=5, warmup_epochs=1.0)
    lrs, momenta = [], []
    for _ in range(20):
        group = optimizer.param_groups[0]
        momenta.append(group["betas"][0] if optimizer_name == "adamw" else group["momentum"])
        lrs += _lrs(schedule, 1)
    start, low = LR / 25, LR / 25 / 1e4
    assert lrs[0] == pytest.approx(start, rel=1e-12)
    assert lrs[1] == pytest.approx(_cos_anneal(start, LR, 1 / 3), rel=1e-12)
    assert lrs[3] == pytest.approx(LR, rel=1e-12)  # peak: step P - 1 = 3
    assert lrs[11] == pytest.approx(_cos_anneal(LR, low, 8 / 16), rel=1e-12)
    assert lrs[19] == pytest.approx(low, rel=1e-9)
    # torch's default momentum cycle, opposite to the lr: 0.95 -> 0.85 at the peak -> 0.95.
    assert momenta[0] == pytest.approx(0.95) and momenta[3] == pytest.approx(0.85)
    assert momenta[19] == pytest.approx(0.95)
    with pytest.raises(ValueError, match="Tried to step"):
        _lrs(schedule, 1)


def test_onecycle_without_warmup_uses_torch_default_30_percent_rise():
    schedule = LrSchedule("onecycle", _optimizer(), steps_per_epoch=4, epochs=5)
    lrs = _lrs(schedule, 20)
    assert lrs[0] == pytest.approx(LR / 25, rel=1e-12)
    assert lrs[2] == pytest.approx(_cos_anneal(LR / 25, LR, 2 / 5), rel=1e-12)
    assert lrs[5] == pytest.approx(LR, rel=1e-12)  # 0.3 * 20 steps: peak at step 5
    assert lrs[19] == pytest.approx(LR / 25 / 1e4, rel=1e-9)


def _epoch(schedule, dice, steps_per_epoch=2):
    lrs = _lrs(schedule, steps_per_epoch)
    schedule.epoch_end(dice)
    return lrs


def test_plateau_reduces_after_patience_plus_one_epochs_without_improvement():
    schedule = LrSchedule("plateau", _optimizer(), steps_per_epoch=2, epochs=40)
    assert _epoch(schedule, 0.5) == [LR, LR]
    for _ in range(PLATEAU_PATIENCE):
        # Equal Dice, and a gain of a relative 1e-5, below torch's 1e-4 threshold, are no improvement.
        _epoch(schedule, 0.5 * (1 + 1e-5))
    assert schedule.lr == LR
    _epoch(schedule, 0.5)
    assert schedule.lr == pytest.approx(LR * PLATEAU_FACTOR, rel=1e-12)
    # Steps do not touch the reduced lr; an improvement restarts the count.
    assert _epoch(schedule, 0.6) == [schedule.lr] * 2
    for _ in range(PLATEAU_PATIENCE - 1):
        _epoch(schedule, 0.55)
    _epoch(schedule, 0.7)
    for _ in range(PLATEAU_PATIENCE):
        _epoch(schedule, 0.7)
    assert schedule.lr == pytest.approx(LR * PLATEAU_FACTOR, rel=1e-12)
    _epoch(schedule, 0.7)
    assert schedule.lr == pytest.approx(LR * PLATEAU_FACTOR**2, rel=1e-12)


def test_plateau_warms_up_per_step_and_ignores_epochs_ending_during_warmup():
    schedule = LrSchedule("plateau", _optimizer(), steps_per_epoch=2, epochs=20, warmup_epochs=2.0)
    lrs = _epoch(schedule, 0.9)
    for _ in range(10):  # would reduce the lr, and set a best of 0.9, if warmup epochs counted
        schedule.epoch_end(0.0)
    lrs += _epoch(schedule, 0.5)
    assert lrs == pytest.approx([LR / 4, LR / 2, 3 * LR / 4, LR], rel=1e-12)
    for _ in range(PLATEAU_PATIENCE):
        assert _epoch(schedule, 0.5) == [LR, LR]
    _epoch(schedule, 0.5)
    assert schedule.lr == pytest.approx(LR * PLATEAU_FACTOR, rel=1e-12)


@pytest.mark.parametrize(("name", "warmup_epochs"), [("cosine", 1.0), ("constant", 0.5), ("onecycle", 1.0)])
def test_epoch_end_does_not_change_other_schedules(name, warmup_epochs):
    plain = LrSchedule(name, _optimizer(), steps_per_epoch=2, epochs=6, warmup_epochs=warmup_epochs)
    told = LrSchedule(name, _optimizer(), steps_per_epoch=2, epochs=6, warmup_epochs=warmup_epochs)
    expected = _lrs(plain, 12)
    got = []
    for _ in range(6):
        got += _lrs(told, 2)
        for _ in range(PLATEAU_PATIENCE + 2):
            told.epoch_end(0.0)
    assert got == expected


# --- resuming ---

DICE = [0.3, 0.5, 0.5, 0.5, 0.5, 0.5, 0.6, 0.6, 0.6, 0.6, 0.6, 0.6]  # plateau reduces at epochs 6 and 11


def _build(name, optimizer_name, warmup_epochs):
    optimizer = make_optimizer(optimizer_name, torch.nn.Linear(2, 1).parameters(), lr=LR, weight_decay=0.01)
    return optimizer, LrSchedule(name, optimizer, steps_per_epoch=3, epochs=len(DICE), warmup_epochs=warmup_epochs)


def _run(optimizer, schedule, start, stop):
    """(lr, momentum or betas) of each step in [start, stop); epoch_end after every third step."""
    seen = []
    for step in range(start, stop):
        group = optimizer.param_groups[0]
        seen.append((group["lr"], group.get("momentum"), group.get("betas")))
        optimizer.step()
        schedule.step()
        if (step + 1) % 3 == 0:
            schedule.epoch_end(DICE[step // 3])
    return seen


@pytest.mark.parametrize("schedule_first", [False, True])
@pytest.mark.parametrize("stop_at", [5, 19])
@pytest.mark.parametrize(
    ("name", "optimizer_name", "warmup_epochs"),
    [
        ("cosine", "adamw", 0.0),
        ("cosine", "sgd", 2.0),
        ("constant", "adamw", 1.5),
        ("onecycle", "adamw", 2.0),
        ("onecycle", "sgd", 0.0),
        ("plateau", "adamw", 0.0),
        ("plateau", "sgd", 2.0),
    ],
)
def test_a_resumed_run_continues_with_bit_identical_lrs(name, optimizer_name, warmup_epochs, stop_at, schedule_first):
    total = 3 * len(DICE)
    expected = _run(*_build(name, optimizer_name, warmup_epochs), 0, total)

    optimizer, schedule = _build(name, optimizer_name, warmup_epochs)
    seen = _run(optimizer, schedule, 0, stop_at)
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "schedule": schedule.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    optimizer, schedule = _build(name, optimizer_name, warmup_epochs)
    if schedule_first:
        schedule.load_state_dict(saved["schedule"])
        optimizer.load_state_dict(saved["optimizer"])
    else:
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
    seen += _run(optimizer, schedule, stop_at, total)
    assert seen == expected
    if name == "plateau":  # the resumed part includes a reduction, and for stop_at 19 follows one
        assert expected[-1][0] == pytest.approx(LR * PLATEAU_FACTOR**2, rel=1e-12)


def test_loading_the_schedule_state_alone_restores_the_optimizer_lr_and_momentum():
    optimizer, schedule = _build("onecycle", "adamw", 2.0)
    _run(optimizer, schedule, 0, 5)
    saved = (optimizer.param_groups[0]["lr"], optimizer.param_groups[0]["betas"])
    fresh, resumed = _build("onecycle", "adamw", 2.0)
    assert (fresh.param_groups[0]["lr"], fresh.param_groups[0]["betas"]) != saved
    resumed.load_state_dict(schedule.state_dict())
    assert (fresh.param_groups[0]["lr"], fresh.param_groups[0]["betas"]) == saved
    assert resumed.lr == saved[0]


def test_loading_a_state_saved_by_a_different_schedule_is_a_user_error():
    _, schedule = _build("cosine", "adamw", 1.0)
    _run(schedule.optimizer, schedule, 0, 4)
    for name, warmup_epochs in [("constant", 1.0), ("cosine", 2.0)]:
        _, other = _build(name, "adamw", warmup_epochs)
        with pytest.raises(UserError, match="resume with the same params") as err:
            other.load_state_dict(schedule.state_dict())
        assert "\n" not in str(err.value)
    longer = LrSchedule("cosine", _optimizer(), steps_per_epoch=3, epochs=len(DICE) + 1, warmup_epochs=1.0)
    with pytest.raises(UserError, match="differs from this run's"):
        longer.load_state_dict(schedule.state_dict())


# --- errors ---


@pytest.mark.parametrize(
    ("name", "steps_per_epoch", "epochs", "warmup_epochs", "message"),
    [
        ("step", 4, 5, 0.0, "cosine, constant, onecycle, plateau; got 'step'"),
        ("cosine", 0, 5, 0.0, "0 steps"),
        ("cosine", 4, 0, 0.0, "0 epochs"),
        ("cosine", 4, 5, -0.5, "got -0.5"),
        ("constant", 4, 5, float("nan"), "got nan"),
        ("plateau", 4, 5, 5.0, "got 5.0"),  # warmup as long as the run
        ("cosine", 2, 1, 0.9, "one of the 2 optimiser steps"),  # 1.8 steps round up to both
        ("onecycle", 2, 5, 0.5, "is 1 optimiser step"),
        ("onecycle", 2, 5, 0.1, "is 0 optimiser step"),
    ],
)
def test_bad_schedule_settings_are_one_line_user_errors(name, steps_per_epoch, epochs, warmup_epochs, message):
    with pytest.raises(UserError, match=message) as err:
        LrSchedule(name, _optimizer(), steps_per_epoch, epochs, warmup_epochs)
    assert "\n" not in str(err.value)


def test_a_one_step_warmup_is_valid_where_warmup_is_linear():
    schedule = LrSchedule("cosine", _optimizer(), steps_per_epoch=2, epochs=5, warmup_epochs=0.5)
    assert _lrs(schedule, 2) == pytest.approx([LR, LR], rel=1e-12)  # lr * 1/1, then cos(0)
