"""Training loop: the optimiser step, validation, best-valid-Dice checkpointing, early stopping, resume."""

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from pipeline import distributed
from pipeline.checkpoint import save_checkpoint
from pipeline.dataset import SegmentationDataset, train_transform
from pipeline.device import (
    autocast,
    configure_backends,
    device_amp_dtype,
    memory_format,
    needs_grad_scaler,
    peak_memory_mib,
    select_device,
)
from pipeline.errors import UserError
from pipeline.loader import make_eval_loader, make_train_loader, resolve_num_workers
from pipeline.losses import LOSSES, LossFn
from pipeline.metrics import confusion_counts, dice_from_counts
from pipeline.models import build_model, init_weights, load_encoder_weights
from pipeline.resume import capture, restore
from pipeline.schedules import LrSchedule, make_optimizer
from pipeline.train_config import TrainConfig


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def accumulation_groups(batches: int, steps: int) -> list[int]:
    """Sizes of the groups of ``batches`` batches that make one optimiser step each.

    ``steps`` batches per group; the last group takes what is left, so no batch of the epoch is
    dropped. E.g. 10 batches, 4 steps → [4, 4, 2].
    """
    full, rest = divmod(batches, steps)
    return [steps] * full + ([rest] if rest else [])


@dataclass
class Batch:
    """How to move a batch to the device: pinned-memory copies run asynchronously (``non_blocking``)."""

    device: torch.device
    non_blocking: bool
    memory_format: torch.memory_format

    def __call__(self, images: torch.Tensor, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images = images.to(self.device, non_blocking=self.non_blocking, memory_format=self.memory_format)
        return images, masks.to(self.device, non_blocking=self.non_blocking)


@torch.inference_mode()
def validate(
    model: nn.Module, loader: DataLoader, loss_fn: LossFn, move: Batch, dtype: torch.dtype | None
) -> tuple[float, float]:
    """Mean loss (weighted by batch size) and dataset-level Dice at threshold 0.5 over ``loader``.

    ``loader`` yields (images float (N, 3, S, S), masks float (N, 1, S, S) in {0, 1, 255 = ignore}).
    Sums stay on the device in fp32 (loss) and int64 (TP/FP/FN/TN counts, images) and are read
    once, after summing them over the ranks: with several processes each ``loader`` holds one
    rank's shard of the valid set, and every rank gets the Dice of the whole set.
    """
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float32, device=move.device)
    counts = torch.zeros(4, dtype=torch.int64, device=move.device)
    images_seen = 0
    for images, masks in loader:
        images, masks = move(images, masks)
        with autocast(move.device.type, dtype):
            logits = model(images)
        logits = logits.float()
        loss_sum += loss_fn(logits, masks) * len(images)
        counts += confusion_counts(torch.sigmoid(logits) > 0.5, masks).sum(0)
        images_seen += len(images)
    seen = torch.tensor(images_seen, device=move.device)
    distributed.sum_over_ranks(loss_sum, counts, seen)
    tp, fp, fn, _ = counts.cpu()
    return loss_sum.item() / seen.item(), float(dice_from_counts(tp, fp, fn))


@dataclass
class EpochStats:
    """One training epoch: mean loss, first non-finite step (1-based; 0 = none), seconds waiting for data."""

    loss: float
    bad_step: int
    data_seconds: float
    seconds: float


def train_epoch(
    model: nn.Module,
    loader: DataLoader,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    schedule: LrSchedule,
    scaler: torch.amp.GradScaler,
    move: Batch,
    dtype: torch.dtype | None,
    accumulate_steps: int,
    grad_clip: float,
    progress: Any = None,
) -> EpochStats:
    """One pass over ``loader`` with an optimiser step every ``accumulate_steps`` batches.

    Each batch's loss is divided by the size of its accumulation group, so a group's gradient is
    the mean over its images as for one big batch. ``grad_clip`` > 0 clips the global gradient
    norm (Pascanu et al. 2013) after unscaling. Nothing reads a device value inside the loop: the
    loss sum (fp32) and the first non-finite step are kept on the device and read once at the end,
    after reducing them over the ranks (loss and images summed, earliest bad step of any rank).
    """
    model.train()
    groups = accumulation_groups(len(loader), accumulate_steps)
    loss_sum = torch.zeros((), dtype=torch.float32, device=move.device)
    bad_step = torch.zeros((), dtype=torch.int64, device=move.device)
    images_seen, data_seconds, start = 0, 0.0, time.perf_counter()
    batches = iter(loader)
    optimizer.zero_grad(set_to_none=True)
    step = 0
    for size in groups:
        for _ in range(size):
            wait = time.perf_counter()
            images, masks = move(*next(batches))
            data_seconds += time.perf_counter() - wait
            step += 1
            with autocast(move.device.type, dtype):
                logits = model(images)
            loss = loss_fn(logits.float(), masks)
            scaler.scale(loss / size).backward()
            loss = loss.detach()
            loss_sum += loss * len(images)
            bad_step = torch.where((bad_step == 0) & ~torch.isfinite(loss), step, bad_step)
            images_seen += len(images)
            if progress is not None:
                progress.update(1)
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
    seen = torch.tensor(images_seen, device=move.device)
    distributed.sum_over_ranks(loss_sum, seen)
    loss_value, bad = loss_sum.item() / seen.item(), int(distributed.earliest_step(bad_step).item())
    return EpochStats(loss_value, bad, data_seconds, time.perf_counter() - start)


@dataclass
class FitResult:
    """Outcome of :func:`fit`: best valid Dice and its epoch, the last epoch trained (earlier than
    ``epochs`` after early stopping), the epoch resumed from (0 = fresh) and wall time in seconds."""

    best_valid_dice: float
    best_epoch: int
    last_epoch: int
    resumed_from: int
    seconds: float


def fit(
    model_name: str,
    arch: dict[str, Any],
    cfg: TrainConfig,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    checkpoint: Path,
    log: Callable[[int, dict[str, float]], None],
    progress: bool = True,
    state: dict[str, Any] | None = None,
    save_state: Callable[[dict[str, Any]], None] | None = None,
    sync_batchnorm: bool = False,
) -> FitResult:
    """Train ``model_name`` and save the weights of the epoch with the best valid Dice.

    ``train`` and ``valid`` are (images uint8 (N, S, S, 3), masks uint8 (N, S, S) in {0, 1, 255}).
    Each epoch calls ``log(epoch, record)`` with train/loss, valid/loss, valid/dice, lr (the lr of
    the epoch's first step), time/data_wait (share of the epoch's seconds spent waiting for
    batches) and, on CUDA, gpu/peak_memory_mib; then ``save_state(state)`` with everything needed
    to continue (``state`` given back resumes after its epoch with identical results on the CPU).
    The checkpoint (:func:`pipeline.checkpoint.save_checkpoint`, atomic) holds ``model``, ``arch``,
    ``state_dict``, ``epoch``, ``valid_dice`` and ``image_size``. Raises UserError if the loss
    becomes non-finite (naming the epoch and step; the last good checkpoint is kept).

    Under torchrun (a process group, see :mod:`pipeline.distributed`) every rank calls this:
    ``cfg.batch_size`` is the global batch, each rank trains its share under DDP (SyncBatchNorm if
    ``sync_batchnorm``) and validates its shard; all get the same logged values and decisions.
    Only rank 0 writes the checkpoint, calls ``log`` and ``save_state`` and shows progress.
    Raises UserError if the rank count does not divide ``batch_size`` or sync_batchnorm is off CUDA.
    """
    seed_everything(cfg.seed)
    device = select_device()
    configure_backends(device.type)
    dtype = device_amp_dtype(device)
    rank, world = distributed.rank(), distributed.world_size()
    main, progress = rank == 0, progress and rank == 0  # the other ranks write and print nothing
    batch = distributed.per_rank_batch(cfg.batch_size, world)
    distributed.check_sync_batchnorm(sync_batchnorm, world, device.type)
    model = build_model(model_name, **arch)
    init_weights(model, cfg.init, cfg.zero_init_residual)
    load_encoder_weights(model, cfg.encoder_weights)
    model = distributed.convert_batchnorm(model, sync_batchnorm)
    model.to(device, memory_format=memory_format(device.type))
    size = train[0].shape[1]
    workers = resolve_num_workers(cfg.num_workers, device.type, nproc=world)
    augment = train_transform(size, cfg.augment, cfg.augmentation)
    train_loader = make_train_loader(
        SegmentationDataset(*train, transform=augment), cfg.batch_size, cfg.seed, workers, device.type, rank, world
    )
    shard = Subset(SegmentationDataset(*valid), range(rank, len(valid[0]), world))
    valid_loader = make_eval_loader(shard, batch, workers, device.type)
    move = Batch(device, device.type == "cuda", memory_format(device.type))
    loss_fn = LOSSES[cfg.loss]
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay, cfg.momentum)
    steps_per_epoch = len(accumulation_groups(len(train_loader), cfg.accumulate_steps))
    schedule = LrSchedule(cfg.scheduler, optimizer, steps_per_epoch, cfg.epochs, cfg.warmup_epochs)
    scaler = torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(dtype))
    net = torch.compile(model) if cfg.compile else model
    parts = dict(model=model, optimizer=optimizer, schedule=schedule, scaler=scaler, sampler=train_loader.sampler)

    def keep(weights: dict[str, torch.Tensor], epoch: int, dice: float) -> None:
        if main:  # every rank holds the same weights
            save_checkpoint(checkpoint, model_name, arch, weights, epoch=epoch, valid_dice=dice, image_size=size)

    best, best_epoch, since_best, best_weights, first = -math.inf, 0, 0, None, 1
    if state is not None:
        restore(state, parts)
        best, best_epoch, since_best = state["best"], state["best_epoch"], state["since_best"]
        best_weights, first = state["best_weights"], state["epoch"] + 1
        keep(best_weights, best_epoch, best)  # DVC deleted the checkpoint before rerunning the stage.
    trainer = distributed.wrap(net)  # after loading the state: DDP starts every rank from rank 0's weights
    start, epoch, stopped = time.perf_counter(), first - 1, state is not None and state["stopped"]
    while not stopped and epoch < cfg.epochs:
        epoch += 1
        lr = schedule.lr
        bar = tqdm(
            total=len(train_loader), desc=f"{model_name} epoch {epoch}/{cfg.epochs}", unit="batch", disable=not progress
        )
        with bar:
            stats = train_epoch(
                trainer, train_loader, loss_fn, optimizer, schedule, scaler, move, dtype, cfg.accumulate_steps,
                cfg.grad_clip, bar,
            )  # fmt: skip
        if stats.bad_step:
            raise UserError(
                f"{model_name}: the training loss became non-finite at epoch {epoch}, step {stats.bad_step}; "
                f"{checkpoint} keeps the best weights so far. Lower lr or set grad_clip in params.yaml"
            )
        distributed.broadcast_buffers(model)
        valid_loss, dice = validate(net, valid_loader, loss_fn, move, dtype)
        schedule.epoch_end(dice)
        if dice > best:
            best, best_epoch, since_best = dice, epoch, 0
            best_weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            keep(best_weights, epoch, dice)
        else:
            since_best += 1
        record = {
            "train/loss": stats.loss,
            "valid/loss": valid_loss,
            "valid/dice": dice,
            "lr": lr,
            "time/data_wait": stats.data_seconds / stats.seconds,
        }
        peak = peak_memory_mib(device)
        if peak is not None:
            record["gpu/peak_memory_mib"] = peak
        if main:
            log(epoch, record)
        if progress:
            tqdm.write(
                f"{model_name} epoch {epoch}: train loss {stats.loss:.4f}, valid loss {valid_loss:.4f}, "
                f"valid Dice {dice:.4f} (best {best:.4f} @ {best_epoch})"
            )
        stopped = cfg.patience > 0 and since_best >= cfg.patience
        if stopped and progress:
            tqdm.write(f"{model_name}: early stop at epoch {epoch}, no better valid Dice for {cfg.patience} epochs")
        if save_state is not None and main:
            values = {"epoch": epoch, "best": best, "best_epoch": best_epoch, "since_best": since_best}
            save_state(capture(parts, **values, best_weights=best_weights, stopped=stopped))
    return FitResult(best, best_epoch, epoch, first - 1, time.perf_counter() - start)
