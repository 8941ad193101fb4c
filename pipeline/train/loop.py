"""One training epoch and one validation pass: the optimiser step, gradient accumulation, the sums
kept on the device and read once per epoch."""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader

from pipeline.core.constants import DEFAULT_THRESHOLD
from pipeline.core.device import autocast
from pipeline.data.colour import model_input
from pipeline.evaluate.confusion import ConfusionMeter, task_scores
from pipeline.train import distributed
from pipeline.train.losses import LossFn
from pipeline.train.schedules import LrSchedule


def accumulation_groups(batches: int, steps: int) -> list[int]:
    """Sizes of the groups of ``batches`` batches that make one optimiser step each.

    ``steps`` batches per group; the last group takes what is left, so no batch of the epoch is
    dropped. E.g. 10 batches, 4 steps → [4, 4, 2].
    """
    full, rest = divmod(batches, steps)
    return [steps] * full + ([rest] if rest else [])


@dataclass
class Batch:
    """How a loader's batch becomes the model's input on the device: uint8 images, masks and the jitter
    are copied there (asynchronously from pinned memory when ``non_blocking``, so the host does not wait
    for the GPU), then the images get their colour jitter (when ``jitter``) and normalisation batch-wise
    (:func:`pipeline.data.colour.model_input`) in ``memory_format``."""

    device: torch.device
    non_blocking: bool
    memory_format: torch.memory_format
    jitter: bool = False

    def __call__(
        self, images: torch.Tensor, masks: torch.Tensor, jitter: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images uint8 (N, 3, S, S), masks uint8 (N, 1, S, S), jitter (N, 6)) → (images float32
        normalised, masks float32 in {0, 1, 255}), both on the device."""
        images = images.to(self.device, non_blocking=self.non_blocking)
        jitter = jitter.to(self.device, non_blocking=self.non_blocking) if self.jitter else None
        images = model_input(images, jitter).contiguous(memory_format=self.memory_format)
        return images, masks.to(self.device, non_blocking=self.non_blocking).float()


@torch.inference_mode()
def validate(
    model: nn.Module, loader: DataLoader, loss_fn: LossFn, move: Batch, dtype: torch.dtype | None, classes: int = 2
) -> tuple[float, dict[str, float]]:
    """Mean loss (weighted by batch size) and dataset-level scores over ``loader`` from one ``classes`` x
    ``classes`` confusion matrix (:class:`pipeline.evaluate.confusion.ConfusionMeter`, at the default
    threshold :data:`~pipeline.core.constants.DEFAULT_THRESHOLD` for one logit): ``{"dice"}`` (of class 1)
    for two classes, ``{"dice", "miou"}`` (mean class Dice, mIoU) for more
    (:func:`pipeline.evaluate.confusion.task_scores`).

    ``loader`` yields (images float (N, 3, S, S), masks float (N, 1, S, S): class indices, 255 = ignore).
    Sums stay on the device in fp32 (loss) and int64 (counts, images) and are read once, after
    summing them over the ranks: with several processes each ``loader`` holds one rank's shard of the
    valid set, and every rank gets the scores of the whole set.
    """
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float32, device=move.device)
    meter = ConfusionMeter(classes, DEFAULT_THRESHOLD, move.device, check=False)
    images_seen = 0
    for batch in loader:
        images, masks = move(*batch)
        with autocast(move.device.type, dtype):
            logits = model(images)
        logits = logits.float()
        loss_sum += loss_fn(logits, masks) * len(images)
        meter.update(logits, masks)
        images_seen += len(images)
    seen = torch.tensor(images_seen, device=move.device)
    distributed.sum_over_ranks(loss_sum, meter.total, seen)
    return loss_sum.item() / seen.item(), task_scores(meter.total.cpu())


@dataclass
class EpochStats:
    """One training epoch: mean loss, first non-finite step (1-based; 0 = none), seconds the host waited
    for the loader's next batch (not counting its move to the device) and the epoch's seconds."""

    loss: float
    bad_step: int
    data_seconds: float
    seconds: float


@dataclass(frozen=True)
class WeightAverage:
    """An exponential moving average of the weights of ``source`` (the plain module, not a DDP or compile
    wrapper, whose parameters and buffers it would have to match one for one) kept in ``averaged``: torch's
    :class:`~torch.optim.swa_utils.AveragedModel` with ``get_ema_multi_avg_fn(decay)`` and ``use_buffers=True``
    (:func:`pipeline.train.setup.set_up` builds it), so BatchNorm's running statistics are averaged as the
    parameters are. Its first :meth:`update` copies ``source``'s weights, each later one moves the average
    a (1 - decay) share of the way to them (Polyak & Juditsky 1992, with exponential weights).

    On a GPU each update makes the host wait for the device: AveragedModel reads its step count
    ``n_averaged`` (a buffer on the device, int64) twice, ``bool(n_averaged == 0)`` and ``n_averaged > 0``;
    the first waits for the queued optimiser step, the second only for its own comparison.
    """

    averaged: AveragedModel
    source: nn.Module

    def update(self) -> None:
        """Average in ``source``'s weights as they are now (after an optimiser step)."""
        self.averaged.update_parameters(self.source)


@dataclass(frozen=True)
class TrainStep:
    """What a training epoch steps the model with, besides the model and its loader: the loss, the
    optimiser with its lr ``schedule`` and grad ``scaler``, how a batch reaches the device (``move``),
    the autocast ``dtype`` (None = fp32), batches per optimiser step (``accumulate_steps`` >= 1),
    the largest global gradient norm (``grad_clip``; 0 = no clipping) and the moving average of the
    weights updated after each optimiser step (``ema``; None = off)."""

    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    scaler: torch.amp.GradScaler
    move: Batch
    dtype: torch.dtype | None
    accumulate_steps: int = 1
    grad_clip: float = 0.0
    ema: WeightAverage | None = None


@dataclass
class _Running:
    """An epoch's sums so far: the loss sum (fp32) and the first non-finite batch (int64, 0 = none) on
    the device, read once at the end; batches, images and seconds waiting for data on the host."""

    loss_sum: torch.Tensor
    bad_step: torch.Tensor
    batches: int = 0
    images: int = 0
    data_seconds: float = 0.0

    @classmethod
    def on(cls, device: torch.device) -> "_Running":
        """Nothing summed yet, the device sums on ``device``."""
        return cls(
            torch.zeros((), dtype=torch.float32, device=device), torch.zeros((), dtype=torch.int64, device=device)
        )


def train_epoch(model: nn.Module, loader: DataLoader, step: TrainStep, progress: Any = None) -> EpochStats:
    """One pass over ``loader`` with an optimiser step every ``step.accumulate_steps`` batches; ``progress``
    (a tqdm bar, or None) is advanced by one a batch.

    Each batch's loss is divided by the size of its accumulation group, so a group's gradient is
    the mean over its images as for one big batch. ``step.grad_clip`` > 0 clips the global gradient
    norm (Pascanu et al. 2013) after unscaling. Nothing reads a device value inside the loop, so the host
    queues steps ahead of the GPU: the loss sum (fp32) and the first non-finite step are kept on the
    device and read once at the end, after reducing them over the ranks (loss and images summed, earliest
    bad step of any rank), and every host-to-device copy is non_blocking (:class:`Batch`). A GradScaler
    (fp16) reads its inf check each step unless the optimiser takes it on the device, as fused AdamW does,
    and the moving average of the weights (``step.ema``) reads its step count (:class:`WeightAverage`).
    """
    model.train()
    groups = accumulation_groups(len(loader), step.accumulate_steps)
    running = _Running.on(step.move.device)
    start = time.perf_counter()
    batches = iter(loader)
    step.optimizer.zero_grad(set_to_none=True)
    for size in groups:
        for micro in range(size):
            _accumulate(model, _next_batch(batches, step.move, running), step, size, micro == size - 1, running)
            if progress is not None:
                progress.update(1)
        _optimizer_step(model, step)
    seen = torch.tensor(running.images, device=step.move.device)
    distributed.sum_over_ranks(running.loss_sum, seen)
    loss, bad = running.loss_sum.item() / seen.item(), int(distributed.earliest_step(running.bad_step).item())
    return EpochStats(loss, bad, running.data_seconds, time.perf_counter() - start)


def _next_batch(batches: Iterator, move: Batch, running: _Running) -> tuple[torch.Tensor, torch.Tensor]:
    """The loader's next batch on the device (:class:`Batch`). Only the wait for the loader is added to
    ``running.data_seconds``: the move to the device is the step's work, so a GPU-bound run does not read
    as one starved of data."""
    wait = time.perf_counter()
    batch = next(batches)
    running.data_seconds += time.perf_counter() - wait
    return move(*batch)


def _accumulate(
    model: nn.Module,
    batch: tuple[torch.Tensor, torch.Tensor],
    step: TrainStep,
    size: int,
    sync: bool,
    running: _Running,
) -> None:
    """Forward and backward one batch of an accumulation group of ``size`` batches (``sync``: its last),
    adding its loss to ``running``."""
    images, masks = batch
    running.batches += 1
    # Under DDP only the group's last backward all-reduces: the others accumulate locally.
    with distributed.gradient_sync(model, sync):
        with autocast(step.move.device.type, step.dtype):
            logits = model(images)
        loss = step.loss_fn(logits.float(), masks)
        step.scaler.scale(loss / size).backward()
    loss = loss.detach()
    running.loss_sum += loss * len(images)
    bad = (running.bad_step == 0) & ~torch.isfinite(loss)
    running.bad_step = torch.where(bad, running.batches, running.bad_step)
    running.images += len(images)


def _optimizer_step(model: nn.Module, step: TrainStep) -> None:
    """Clip (when asked), step and zero the accumulated gradients, advance the lr schedule, then update the
    moving average of the weights (when on)."""
    if step.grad_clip > 0:
        step.scaler.unscale_(step.optimizer)
        nn.utils.clip_grad_norm_(model.parameters(), step.grad_clip)
    step.scaler.step(step.optimizer)
    step.scaler.update()
    step.optimizer.zero_grad(set_to_none=True)
    step.schedule.step()
    if step.ema is not None:
        # Also after a step the fp16 grad scaler skipped (an inf gradient): knowing it would take a read of
        # its inf check from the device, and the average only moves towards weights that did not change
        # (timm's train.py updates its EMA after every optimiser step in the same way).
        step.ema.update()
