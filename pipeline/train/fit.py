"""Training a model: the set-up (seeds, device, model, loaders, optimiser, schedule) and the epoch
loop around :mod:`pipeline.train.loop` (best-valid-score checkpointing, early stopping, resume)."""

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

from pipeline.core.constants import SCORE_LABELS
from pipeline.core.device import Compute, configure_backends, memory_format, needs_grad_scaler, peak_memory_mib
from pipeline.core.errors import UserError
from pipeline.core.messages import hide_bar
from pipeline.data.classes import BINARY_PETS, Classes, classes_to_json
from pipeline.data.dataset import SegmentationDataset, jitter_strength, train_transform
from pipeline.data.loader import make_eval_loader, make_train_loader, resolve_num_workers
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.init import init_weights
from pipeline.models.pretrained import load_encoder_weights
from pipeline.models.registry import build_model
from pipeline.train import distributed
from pipeline.train.config import TrainConfig
from pipeline.train.loop import Batch, accumulation_groups, train_epoch, validate
from pipeline.train.losses import LossFn, loss_function
from pipeline.train.resume import capture, restore
from pipeline.train.schedules import LrSchedule, make_optimizer

Log = Callable[[int, dict[str, float]], None]
CPU_FP32 = Compute()  # fit's default: the CPU, no autocast


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def selection_metric(classes: Classes) -> str:
    """The valid score that chooses the checkpoint and drives early stopping: "dice" (of class 1) for a
    binary task, "miou" for a multi-class one, where a mean Dice would let a large class hide a missed
    small one less visibly than IoU does."""
    return "dice" if classes.binary else "miou"


@dataclass
class FitResult:
    """Outcome of :func:`fit`: the best valid score (``metric``, :func:`selection_metric`) and its epoch,
    the last epoch trained (earlier than ``epochs`` after early stopping), the epoch resumed from
    (0 = fresh) and wall time in seconds."""

    metric: str
    best_valid: float
    best_epoch: int
    last_epoch: int
    resumed_from: int
    seconds: float


@dataclass
class Run:
    """What :func:`set_up` builds for a training run, before its first epoch.

    ``model`` is the plain module whose weights are saved; ``net`` what runs them (``model``, or
    ``torch.compile(model)``). ``dtype`` is the autocast dtype (None = fp32); ``parts`` the stateful
    pieces a resume state holds (:func:`pipeline.train.resume.capture`). ``main``: this process writes
    files (rank 0); ``progress``: it shows bars and epoch lines.
    """

    model: nn.Module
    net: nn.Module
    device: torch.device
    dtype: torch.dtype | None
    move: Batch
    train_loader: DataLoader
    valid_loader: DataLoader
    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    schedule: LrSchedule
    scaler: torch.amp.GradScaler
    image_size: int
    classes: Classes
    main: bool
    progress: bool

    @property
    def parts(self) -> dict[str, Any]:
        return dict(
            model=self.model,
            optimizer=self.optimizer,
            schedule=self.schedule,
            scaler=self.scaler,
            sampler=self.train_loader.sampler,
        )


def set_up(
    model_name: str,
    arch: dict[str, Any],
    cfg: TrainConfig,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    progress: bool,
    sync_batchnorm: bool,
    compute: Compute,
    classes: Classes = BINARY_PETS,
) -> Run:
    """Seed every RNG with ``cfg.seed`` and build, in this order (each draws from the seeded RNGs, so
    the order is part of the result), the model and its initial weights, the loaders, the optimiser,
    the schedule and the grad scaler, on ``compute.device``. Arguments as :func:`fit`; raises
    UserError as it does for a bad setting."""
    seed_everything(cfg.seed)
    device, dtype = compute.device, compute.dtype
    configure_backends(device.type, fixed_size=True)  # every training batch is size x size pixels
    rank, world = distributed.rank(), distributed.world_size()
    batch = distributed.per_rank_batch(cfg.batch_size, world)
    distributed.check_sync_batchnorm(sync_batchnorm, world, device.type)
    model = build_model(model_name, classes.logits, **arch)
    init_weights(model, cfg.init, cfg.zero_init_residual)
    load_encoder_weights(model, cfg.encoder_weights)
    model = distributed.convert_batchnorm(model, sync_batchnorm)
    model.to(device, memory_format=memory_format(device.type))
    size = train[0].shape[1]
    workers = resolve_num_workers(cfg.num_workers, device.type, nproc=world)
    augment = train_transform(size, cfg.augment, cfg.augmentation)
    jitter = jitter_strength(cfg.augment, cfg.augmentation)
    train_loader = make_train_loader(
        SegmentationDataset(*train, augment, jitter), cfg.batch_size, cfg.seed, workers, device.type, rank, world
    )
    shard = Subset(SegmentationDataset(*valid), range(rank, len(valid[0]), world))
    optimizer = make_optimizer(
        cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay, cfg.momentum, fused=device.type == "cuda"
    )
    steps_per_epoch = len(accumulation_groups(len(train_loader), cfg.accumulate_steps))
    return Run(
        model=model,
        net=torch.compile(model) if cfg.compile else model,
        device=device,
        dtype=dtype,
        move=Batch(device, device.type == "cuda", memory_format(device.type), jitter=jitter > 0),
        train_loader=train_loader,
        valid_loader=make_eval_loader(shard, batch, workers, device.type),
        loss_fn=loss_function(cfg.loss, classes.logits),
        optimizer=optimizer,
        schedule=LrSchedule(cfg.scheduler, optimizer, steps_per_epoch, cfg.epochs, cfg.warmup_epochs),
        scaler=torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(dtype)),
        image_size=size,
        classes=classes,
        main=rank == 0,
        progress=progress and rank == 0,  # the other ranks write and print nothing
    )


def fit(
    model_name: str,
    arch: dict[str, Any],
    cfg: TrainConfig,
    train: tuple[np.ndarray, np.ndarray],
    valid: tuple[np.ndarray, np.ndarray],
    checkpoint: Path,
    log: Log,
    progress: bool = True,
    state: dict[str, Any] | None = None,
    save_state: Callable[[dict[str, Any]], None] | None = None,
    sync_batchnorm: bool = False,
    compute: Compute = CPU_FP32,
    classes: Classes = BINARY_PETS,
) -> FitResult:
    """Train ``model_name`` for ``classes`` (1 logit for a binary task, C for C classes) and save the
    weights of the epoch with the best valid score (:func:`selection_metric`).

    ``train`` and ``valid`` are (images uint8 (N, S, S, 3), masks uint8 (N, S, S): class indices, 255
    ignored). Each epoch calls ``log(epoch, record)`` with train/loss, valid/loss, valid/dice (a
    multi-class task's mean class Dice, and valid/miou), lr (the lr of
    the epoch's first step), time/data_wait (share of the epoch's seconds spent waiting for
    batches) and, on CUDA, gpu/peak_memory_mib; then ``save_state(state)`` with everything needed
    to continue (``state`` given back resumes after its epoch with identical results on the CPU).
    The checkpoint (:func:`pipeline.models.checkpoint.save_checkpoint`, atomic) holds ``model``, ``arch``,
    ``state_dict``, ``out_channels``, ``classes``, ``epoch``, ``valid_dice`` (and ``valid_miou``) and
    ``image_size``. Raises UserError if the loss
    becomes non-finite (naming the epoch and step; the last good checkpoint is kept).

    Under torchrun (a process group, see :mod:`pipeline.train.distributed`) every rank calls this:
    ``cfg.batch_size`` is the global batch, each rank trains its share under DDP (SyncBatchNorm if
    ``sync_batchnorm``) and validates its shard; all get the same logged values and decisions.
    Only rank 0 writes the checkpoint, calls ``log`` and ``save_state`` and shows progress.
    ``compute`` is the device and autocast dtype (:func:`pipeline.core.device.decide`; the CPU in
    fp32 by default). Raises UserError if the rank count does not divide ``batch_size`` or
    sync_batchnorm is off CUDA.
    """
    run = set_up(model_name, arch, cfg, train, valid, progress, sync_batchnorm, compute, classes)
    owner = {"out_channels": classes.logits, "classes": classes_to_json(classes), "image_size": run.image_size}

    def keep(weights: dict[str, torch.Tensor], epoch: int, scores: dict[str, float]) -> None:
        if run.main:  # every rank holds the same weights
            valid = {f"valid_{name}": value for name, value in scores.items()}
            save_checkpoint(checkpoint, model_name, arch, weights, epoch=epoch, **valid, **owner)

    best = {"score": -math.inf, "scores": {}, "epoch": 0, "since": 0, "weights": None}
    first, stopped = 1, False
    if state is not None:
        restore(state, run.parts)
        best = {"score": state["best"], "scores": state["best_scores"], "epoch": state["best_epoch"]}
        best["since"], best["weights"] = state["since_best"], state["best_weights"]
        first, stopped = state["epoch"] + 1, state["stopped"]
        keep(best["weights"], best["epoch"], best["scores"])  # DVC deleted the checkpoint before rerunning the stage.
    start = time.perf_counter()
    last = _epochs(run, model_name, cfg, first, stopped, best, keep, log, save_state, checkpoint)
    metric = selection_metric(classes)
    return FitResult(metric, best["score"], best["epoch"], last, first - 1, time.perf_counter() - start)


def _epochs(
    run: Run,
    model_name: str,
    cfg: TrainConfig,
    first: int,
    stopped: bool,
    best: dict[str, Any],
    keep: Callable[[dict[str, torch.Tensor], int, dict[str, float]], None],
    log: Log,
    save_state: Callable[[dict[str, Any]], None] | None,
    checkpoint: Path,
) -> int:
    """Train epochs ``first`` .. ``cfg.epochs`` (none if ``stopped``), updating ``best`` (score, scores,
    epoch, since, weights) in place; returns the last epoch trained."""
    metric = selection_metric(run.classes)
    label = SCORE_LABELS[metric]
    trainer = distributed.wrap(run.net)  # after loading the state: DDP starts every rank from rank 0's weights
    epoch = first - 1
    while not stopped and epoch < cfg.epochs:
        epoch += 1
        lr = run.schedule.lr
        desc = f"{model_name} epoch {epoch}/{cfg.epochs}"
        with tqdm(total=len(run.train_loader), desc=desc, unit="batch", disable=hide_bar(run.progress)) as bar:
            stats = train_epoch(
                trainer, run.train_loader, run.loss_fn, run.optimizer, run.schedule, run.scaler, run.move, run.dtype,
                cfg.accumulate_steps, cfg.grad_clip, bar,
            )  # fmt: skip
        if stats.bad_step:
            raise UserError(
                f"{model_name}: the training loss became non-finite at epoch {epoch}, step {stats.bad_step}; "
                f"{checkpoint} keeps the best weights so far. Lower lr or set grad_clip in params.yaml"
            )
        distributed.broadcast_buffers(run.model)
        valid_loss, scores = validate(run.net, run.valid_loader, run.loss_fn, run.move, run.dtype, run.classes.count)
        score = scores[metric]
        run.schedule.epoch_end(score)
        if score > best["score"]:
            weights = {k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()}
            best.update(score=score, scores=scores, epoch=epoch, since=0, weights=weights)
            keep(weights, epoch, scores)
        else:
            best["since"] += 1
        record = {
            "train/loss": stats.loss,
            "valid/loss": valid_loss,
            **{f"valid/{name}": value for name, value in scores.items()},
            "lr": lr,
            "time/data_wait": stats.data_seconds / stats.seconds,
        }
        peak = peak_memory_mib(run.device)
        if peak is not None:
            record["gpu/peak_memory_mib"] = peak
        if run.main:
            log(epoch, record)
        if run.progress:
            tqdm.write(
                f"{model_name} epoch {epoch}: train loss {stats.loss:.4f}, valid loss {valid_loss:.4f}, "
                f"valid {label} {score:.4f} (best {best['score']:.4f} @ {best['epoch']})"
            )
        stopped = cfg.patience > 0 and best["since"] >= cfg.patience
        if stopped and run.progress:
            tqdm.write(f"{model_name}: early stop at epoch {epoch}, no better valid {label} for {cfg.patience} epochs")
        if save_state is not None and run.main:
            values = {"epoch": epoch, "best": best["score"], "best_epoch": best["epoch"], "since_best": best["since"]}
            values["best_scores"] = best["scores"]
            save_state(capture(run.parts, **values, best_weights=best["weights"], stopped=stopped))
    return epoch
