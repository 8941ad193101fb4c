"""How long training both models takes on this CPU, before any data exists: FLOPs over a measured rate.

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward and backward of each model on the
meta device (shapes only, nothing computed, no weights allocated) at the run's own image sizes; a
multiply-add counts 2, and only the convolutions and matrix products count (BatchNorm, ReLU and the
optimiser are left to the rate). The total is :func:`total_flops`: train images x epochs x forward and
backward, plus each epoch's forward passes over the valid images.

Rate: each model's training steps (forward, a mean loss, backward, an AdamW step) timed on this CPU for
:data:`MEASURE_S` seconds, in channels_last and the precision ``precision:`` resolves to here
(:func:`pipeline.core.device.decide`), on a batch cut down to about :data:`STEP_FLOPS`; the FLOPs of the
timed step are counted as it runs. A run keeps :data:`RUN_SHARE` of that rate. Against real training the
estimate was within 2x (docs/performance.md, "The CPU guard").
"""

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from pipeline.core.device import Compute, autocast, decide, memory_format
from pipeline.core.errors import UserError
from pipeline.core.param_schema import Params
from pipeline.models.registry import build_model
from pipeline.train.config import train_config
from pipeline.train.workload import HOUR_S, Workload, cannot_take_an_hour

# FLOPs of one timed step at most (~0.12 s at the 2-core VM's 400 GFLOP/s; the README's CPU settings fit at
# batch 8 and 4): the batch, then the side, is cut until it fits. Smaller steps run at a lower FLOP rate,
# which errs towards a longer estimate.
STEP_FLOPS = 5e10
# The share of the timed steps' rate a whole training run keeps: it also loads and flips batches, computes the
# loss and the valid metrics, and writes the checkpoint and the resume state each epoch. The README's CPU run
# trained at 0.69 (UNet) and 0.71 (ResNet34-UNet) of bench/models.py's step rates (docs/performance.md; the
# train times of docs/results.md over the FLOPs of both).
RUN_SHARE = 0.7
MEASURE_S = 0.5  # seconds of timed steps per model, after one untimed step that warms oneDNN up
MIN_SIDE = 64  # pixels: at 32 the ResNet-34's last stage is 1x1, where BatchNorm cannot train on one image
# How the guard's line shows a model's registry name.
SHOWN = {"unet": "UNet", "resnet34_unet": "ResNet34-UNet"}


@dataclass(frozen=True)
class Cost:
    """One model's FLOPs per image: ``train`` a training image's forward and backward at the training side,
    ``valid`` a valid image's forward at the valid side."""

    train: float
    valid: float


def count_flops(model: nn.Module, side: int, batch: int = 2) -> tuple[float, float]:
    """FLOPs per image of ``model`` (on any device; the meta device computes nothing) on ``batch`` images
    (N, 3, side, side) float32: (forward, forward and backward). Two images, since BatchNorm cannot train on
    one at the ResNet's 1x1 bottom; the count is exactly linear in N."""
    device = next(model.parameters()).device
    images = torch.zeros(batch, 3, side, side, device=device).to(memory_format=memory_format(device.type))
    with FlopCounterMode(display=False) as counter:
        logits = model(images)
        forward = counter.get_total_flops()
        logits.float().mean().backward()
    return forward / batch, counter.get_total_flops() / batch


def model_cost(load: Workload, arch: dict) -> Cost:
    """The :class:`Cost` of ``load``'s model built with ``arch`` (its params section's architecture keys). One
    logit: a task's C classes add C - 1 channels to the last 1x1 convolution, well under 1% of the FLOPs."""
    with torch.device("meta"):
        model = build_model(load.model, **arch)
    forward, train = count_flops(model, load.side)
    valid = forward if load.valid_side == load.side else count_flops(model, load.valid_side)[0]
    return Cost(train, valid)


def total_flops(load: Workload, cost: Cost) -> float:
    """FLOPs of ``load``'s whole training: each epoch's train images forward and backward, and its valid
    images forward."""
    return load.epochs * (load.train_images * cost.train + load.valid_images * cost.valid)


def timed_shape(load: Workload, cost: Cost) -> tuple[int, int]:
    """(batch, side) of the timed steps: ``load``'s own, the batch halved down to 2 and then the side down to
    :data:`MIN_SIDE` (a multiple of 32) while a step's FLOPs exceed :data:`STEP_FLOPS`. FLOPs scale exactly
    with the pixels (sides are multiples of 32, so every level's size halves exactly)."""
    batch, side = load.batch_size, load.side

    def step_flops() -> float:
        return batch * cost.train * (side / load.side) ** 2

    while batch > 2 and step_flops() > STEP_FLOPS:
        batch //= 2
    while side > MIN_SIDE and step_flops() > STEP_FLOPS:
        side = max(MIN_SIDE, side // 2 // 32 * 32)
    return batch, side


def measure_rate(model: nn.Module, batch: int, side: int, compute: Compute, seconds: float = MEASURE_S) -> float:
    """FLOP/s of ``model``'s training steps on ``compute`` (its device, autocast dtype) on random images
    (batch, 3, side, side), channels_last: one untimed step, whose FLOPs are counted, then steps for about
    ``seconds`` (one at least)."""
    model = model.to(compute.device, memory_format=memory_format(compute.device.type)).train()
    optimizer = torch.optim.AdamW(model.parameters())
    images = torch.randn(batch, 3, side, side, device=compute.device)
    images = images.to(memory_format=memory_format(compute.device.type))

    def step() -> None:
        with autocast(compute.device.type, compute.dtype):
            loss = model(images).float().mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        step()
    steps, start = 0, time.perf_counter()
    while not steps or time.perf_counter() - start < seconds:
        step()
        steps += 1
    return steps * counter.get_total_flops() / (time.perf_counter() - start)


def check(
    loads: list[Workload], archs: dict[str, dict], compute: Compute, why: str, measure: Callable | None = None
) -> str | None:
    """Estimate ``loads`` (one per model, built with ``archs[model]``) on ``compute``; raise UserError in one
    line (``why``: the device decision's line, then the estimate and the two ways on) when it exceeds an hour.
    Returns the estimate's line otherwise, or None without measuring where nothing needs it: a GPU, or
    FLOPs under an hour even at the slowest rate. ``measure`` (model, batch, side, compute) gives FLOP/s
    (:func:`measure_rate`, looked up when called, where None)."""
    if compute.device.type != "cpu":
        return None
    costs = {load.model: model_cost(load, archs[load.model]) for load in loads}
    flops = {load.model: total_flops(load, costs[load.model]) for load in loads}
    if cannot_take_an_hour(sum(flops.values())):
        return None
    measure, rates = measure or measure_rate, {}
    for load in loads:
        batch, side = timed_shape(load, costs[load.model])
        rates[load.model] = measure(build_model(load.model, **archs[load.model]), batch, side, compute)
    seconds = {model: flops[model] / (RUN_SHARE * rates[model]) for model in flops}
    first = loads[0]
    said = (
        f"training both models on this CPU would take about {duration(sum(seconds.values()))} ("
        + ", ".join(f"{SHOWN[load.model]} {duration(seconds[load.model])}, {load.epochs} epochs" for load in loads)
        + f"; {first.train_images} train and {first.valid_images} valid images at {first.side} px; "
        f"{compute.precision} at {', '.join(f'{rate / 1e9:.0f}' for rate in rates.values())} GFLOP/s measured)"
    )
    if sum(seconds.values()) > HOUR_S:
        raise UserError(
            f"{why}: {said}; run the CPU settings with `make repro-cpu` (README, Running on a CPU), "
            "or train here anyway with `dvc exp run -S device=cpu`"
        )
    return f"validate: {said}"


def duration(seconds: float) -> str:
    """``seconds`` as a person reads a long wait: minutes under an hour, then hours (one decimal under 10)."""
    if seconds < HOUR_S:
        return f"{seconds / 60:.0f} min"
    hours = seconds / HOUR_S
    return f"{hours:.1f} h" if hours < 10 else f"{hours:.0f} h"


def guard(params: Params, loads: list[Workload]) -> str | None:
    """:func:`check` on the compute that ``device``, ``precision`` and ``threads`` decide here (which sets
    torch's thread count as training will). Raises UserError as :func:`check` and
    :func:`pipeline.core.device.decide`."""
    compute, said = decide(params.device, params.precision, params.threads)
    archs = {load.model: train_config(params, load.model)[1] for load in loads}
    return check(loads, archs, compute, said[0])
