"""Training loop: AdamW, an lr schedule, best-valid-Dice checkpointing, dvclive logging."""

import math
import pickle
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pipeline.dataset import SegmentationDataset, train_transform
from pipeline.errors import UserError
from pipeline.io import atomic_path
from pipeline.losses import LOSSES, LossFn
from pipeline.metrics import SegmentationMeter
from pipeline.models import build_model
from pipeline.params import TrainConfig


def select_device() -> torch.device:
    """CUDA if available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def make_scheduler(
    name: str, optimizer: torch.optim.Optimizer, total_steps: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-step lr schedule: "cosine" anneals from ``lr`` to 0 over ``total_steps`` (Loshchilov &
    Hutter 2017, SGDR, without restarts); "constant" keeps ``lr``. Raises UserError for other names."""
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
    if name == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    raise UserError(f"params.yaml: scheduler must be cosine or constant, got {name!r}")


def _autocast(device: torch.device) -> torch.autocast:
    # Mixed precision only where it pays: fp16 on CUDA. On CPU autocast is disabled (a no-op).
    return torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda")


@torch.no_grad()
def evaluate(
    model: nn.Module, loader: DataLoader, loss_fn: LossFn, device: torch.device
) -> tuple[float, dict[str, float | int]]:
    """Mean loss (weighted by batch size) and :class:`SegmentationMeter` metrics over ``loader``.

    ``loader`` yields (images float (N, 3, S, S), masks float (N, 1, S, S)); the threshold is 0.5.
    """
    model.eval()
    meter, total, count = SegmentationMeter(), 0.0, 0
    for images, masks in loader:
        images, masks = images.to(device), masks.to(device)
        with _autocast(device):
            logits = model(images)
        total += float(loss_fn(logits, masks)) * len(images)
        count += len(images)
        meter.update(logits, masks)
    return total / count, meter.compute()


@dataclass
class FitResult:
    """Outcome of :func:`fit`: best valid Dice, its epoch (1-based) and wall time in seconds."""

    best_valid_dice: float
    best_epoch: int
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
) -> FitResult:
    """Train ``model_name`` and save the weights of the epoch with the best valid Dice.

    ``train`` and ``valid`` are (images uint8 (N, S, S, 3), masks uint8 (N, S, S)). Each epoch calls
    ``log(epoch, {"train/loss", "valid/loss", "valid/dice", "lr"})``. The checkpoint (written
    atomically) is a dict with ``model``, ``arch``, ``state_dict``, ``epoch``, ``valid_dice`` and
    ``image_size``, loadable with ``torch.load(..., weights_only=True)``.
    """
    seed_everything(cfg.seed)
    device = select_device()
    model = build_model(model_name, **arch).to(device)
    size = train[0].shape[1]
    train_ds = SegmentationDataset(*train, transform=train_transform(size, cfg.augment))
    generator = torch.Generator().manual_seed(cfg.seed)
    # drop_last avoids a final batch of one image, which BatchNorm cannot normalise in train mode.
    train_loader = DataLoader(
        train_ds, batch_size=cfg.batch_size, shuffle=True, generator=generator, drop_last=len(train_ds) > cfg.batch_size
    )
    valid_loader = DataLoader(SegmentationDataset(*valid), batch_size=cfg.batch_size)
    loss_fn = LOSSES[cfg.loss]
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(cfg.scheduler, optimizer, cfg.epochs * len(train_loader))
    scaler = torch.amp.GradScaler(device.type, enabled=device.type == "cuda")
    best, best_epoch, start = -math.inf, 0, time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        total, count = 0.0, 0
        bar = tqdm(train_loader, desc=f"{model_name} epoch {epoch}/{cfg.epochs}", unit="batch", disable=not progress)
        for images, masks in bar:
            images, masks = images.to(device), masks.to(device)
            with _autocast(device):
                loss = loss_fn(model(images), masks)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            total += loss.item() * len(images)
            count += len(images)
            bar.set_postfix(loss=f"{total / count:.4f}")
        valid_loss, metrics = evaluate(model, valid_loader, loss_fn, device)
        record = {"train/loss": total / count, "valid/loss": valid_loss, "valid/dice": metrics["dice"], "lr": lr}
        log(epoch, record)
        if metrics["dice"] > best:
            best, best_epoch = metrics["dice"], epoch
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            with atomic_path(checkpoint) as tmp:
                torch.save(
                    {
                        "model": model_name,
                        "arch": arch,
                        "state_dict": state,
                        "epoch": epoch,
                        "valid_dice": best,
                        "image_size": size,
                    },
                    tmp,
                )
        if progress:
            tqdm.write(
                f"{model_name} epoch {epoch}: train loss {record['train/loss']:.4f}, valid loss {valid_loss:.4f}, "
                f"valid Dice {metrics['dice']:.4f} (best {best:.4f} @ {best_epoch})"
            )
    return FitResult(best, best_epoch, time.perf_counter() - start)


def load_checkpoint(path: Path, device: torch.device) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model saved by :func:`fit` on ``device`` in eval mode; return it and the checkpoint.

    The file is read and the model rebuilt on the CPU first, so a broken file and a device that
    cannot take the model are told apart. Raises UserError if the file is missing or is not a
    petseg checkpoint, if memory runs out (host or device), or if ``device`` is unusable (e.g. CUDA
    asked for on a machine without a GPU driver).
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        model = build_model(ckpt["model"], **ckpt["arch"])
        model.load_state_dict(ckpt["state_dict"])
        for key in ("epoch", "valid_dice", "image_size"):
            ckpt[key]
    except FileNotFoundError:
        raise UserError(f"{path}: checkpoint not found; run the training stage first (dvc repro)") from None
    except MemoryError:
        raise UserError(f"{path}: out of host memory while loading it; free memory and retry") from None
    except (KeyError, RuntimeError, TypeError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise UserError(f"{path}: not a petseg checkpoint ({str(err).splitlines()[0]}); retrain it") from None
    try:
        model.to(device)
    except torch.OutOfMemoryError:
        raise UserError(f"{path}: out of memory on {device} moving the model there; free it or use the CPU") from None
    except RuntimeError as err:  # no driver, no such device index, a device in use by another process
        raise UserError(f"{path}: cannot use {device} ({str(err).splitlines()[0]}); use the CPU") from None
    return model.eval(), ckpt
