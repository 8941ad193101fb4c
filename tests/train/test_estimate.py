"""The CPU guard's estimate: FLOPs counted on the meta device and scaled by images and epochs, the timed
steps' shape, the measured rate, and the decision (a GPU, under an hour, over an hour) on a given rate."""

import math

import pytest
import torch

from pipeline.core.device import Compute
from pipeline.core.errors import UserError
from pipeline.models.registry import build_model
from pipeline.train import estimate
from pipeline.train.estimate import Cost, check, count_flops, duration, measure_rate, model_cost, timed_shape
from pipeline.train.workload import HOUR_S, Workload
from tests.support import TINY_ARCH

CPU = Compute(torch.device("cpu"), torch.bfloat16)
WHY = "device: cpu (auto: no CUDA GPU)"


def _load(model="unet", epochs=2, train=10, side=64, valid=3, valid_side=64, batch=8) -> Workload:
    return Workload(model, epochs, batch, train, side, valid, valid_side)


def _never(*args):
    raise AssertionError("measured where nothing needed it")


def test_flops_scale_exactly_with_pixels_and_backward_doubles_the_forward():
    with torch.device("meta"):
        model = build_model("resnet34_unet", **TINY_ARCH["resnet34_unet"])
    forward, train = count_flops(model, 64)
    assert count_flops(model, 128) == (4 * forward, 4 * train)  # every level's side halves exactly
    assert 2.9 < train / forward < 3.0  # the first convolution needs no input gradient


def test_a_kept_aspect_valid_side_is_counted_at_its_own_size():
    arch = TINY_ARCH["unet"]
    square = model_cost(_load(side=64, valid_side=64), arch)
    kept = model_cost(_load(side=64, valid_side=128), arch)
    assert kept.train == square.train and kept.valid == 4 * square.valid


def test_total_flops_are_linear_in_images_and_epochs():
    cost = Cost(train=3.0, valid=1.0)
    assert estimate.total_flops(_load(epochs=2, train=10, valid=3), cost) == 2 * (10 * 3.0 + 3 * 1.0)
    assert estimate.total_flops(_load(epochs=4, train=20, valid=6), cost) == 4 * 2 * (10 * 3.0 + 3 * 1.0)


def test_timed_steps_cut_the_batch_then_the_side_to_the_step_budget():
    budget = estimate.STEP_FLOPS
    assert timed_shape(_load(batch=8, side=128), Cost(budget / 8, 0)) == (8, 128)  # fits as training runs it
    assert timed_shape(_load(batch=16, side=256), Cost(budget / 4, 0)) == (4, 256)
    assert timed_shape(_load(batch=16, side=256), Cost(budget, 0)) == (2, 128)
    assert timed_shape(_load(batch=16, side=160), Cost(100 * budget, 0)) == (2, estimate.MIN_SIDE)


def test_measure_rate_times_real_training_steps():
    model = build_model("unet", **TINY_ARCH["unet"])
    before = [p.detach().clone() for p in model.parameters()]
    rate = measure_rate(model, 2, 64, Compute(), seconds=0.0)
    assert math.isfinite(rate) and rate > 0
    assert any(not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True))  # AdamW stepped


def _check(rate: float, loads=None, compute=CPU, measure=None):
    loads = loads or [_load("unet", epochs=400, train=320, side=128), _load("resnet34_unet", epochs=400, train=320)]
    return check(loads, TINY_ARCH, compute, WHY, measure or (lambda *args: rate))


def test_a_gpu_or_a_small_run_is_not_measured():
    assert _check(0, compute=Compute(torch.device("cuda")), measure=_never) is None
    assert _check(0, loads=[_load(epochs=1, train=4)], measure=_never) is None


def test_under_an_hour_the_run_goes_on_with_its_estimate():
    loads = [_load("unet", epochs=2000, train=3000, side=128)]
    flops = estimate.total_flops(loads[0], model_cost(loads[0], TINY_ARCH["unet"]))
    rate = 2 * flops / (estimate.RUN_SHARE * HOUR_S)  # half an hour
    assert _check(rate, loads) == "validate: training both models on this CPU would take about 30 min (" + (
        f"UNet 30 min, 2000 epochs; 3000 train and 3 valid images at 128 px; bf16 at {rate / 1e9:.0f} GFLOP/s measured)"
    )


def test_over_an_hour_it_stops_in_one_line_with_the_estimate_and_both_ways_on():
    with pytest.raises(UserError) as err:
        _check(rate=1e9)  # 1 GFLOP/s
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{WHY}: training both models on this CPU would take about ")
    assert "UNet " in line and "ResNet34-UNet " in line and " h, 400 epochs" in line and "at 1, 1 GFLOP/s" in line
    assert line.endswith(
        "`make repro-cpu` (README, Running on a CPU), or train here anyway with `dvc exp run -S device=cpu`"
    )


def test_durations_read_in_minutes_then_hours():
    assert [duration(s) for s in (59, 1800, 3600 * 2.54, 3600 * 31.4)] == ["1 min", "30 min", "2.5 h", "31 h"]
