"""Setting up a training run: seeds, device, the model and its initial weights, the loaders, the
optimiser, the schedule and the rest of a training step, built in a fixed order."""

import random
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset

from pipeline.core.device import choose_compile, configure_backends, memory_format, needs_grad_scaler
from pipeline.data.dataset import SegmentationDataset, jitter_strength, train_transform
from pipeline.data.device_augment import AffineDataset, DeviceLoader, DeviceSplit
from pipeline.data.geometry import extents, own_padding
from pipeline.data.loader import make_eval_loader, make_train_loader, resolve_num_workers
from pipeline.models.init import init_weights
from pipeline.models.pretrained import load_encoder_weights
from pipeline.models.registry import build_model
from pipeline.train import distributed
from pipeline.train.config import RunConfig
from pipeline.train.loop import Batch, TrainStep, WeightAverage, accumulation_groups
from pipeline.train.losses import loss_function
from pipeline.train.schedules import LrSchedule, make_optimizer


class Arrays(NamedTuple):
    """A split as training takes it: ``images`` uint8 (N, H, W, 3), ``masks`` uint8 (N, H, W) (class indices,
    255 ignored) and ``sizes`` int (N, 2), each image's (height, width) on the canvas (None: all of it)."""

    images: np.ndarray
    masks: np.ndarray
    sizes: np.ndarray | None = None


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and PyTorch (CPU and CUDA) RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class Run:
    """What :func:`set_up` builds for a training run, before its first epoch.

    ``model`` is the plain module that trains; ``net`` what trains it (``model``, or ``torch.compile(model)``
    as :func:`~pipeline.core.device.choose_compile` decides); ``step`` the optimiser, schedule, loss, the
    moving average of the weights and the rest an epoch steps with. :attr:`kept` is the module validation
    runs and whose weights are saved. ``image_size`` is the side of the training images (or crops) in
    pixels. ``main``: this process writes files (rank 0); ``progress``: it shows bars and epoch lines.
    ``parts`` are the stateful pieces a resume state holds (:func:`pipeline.train.resume.capture`).
    """

    model: nn.Module
    net: nn.Module
    train_loader: DataLoader | DeviceLoader
    valid_loader: DataLoader
    step: TrainStep
    image_size: int
    main: bool
    progress: bool

    @property
    def kept(self) -> nn.Module:
        """The module validation runs and the checkpoint saves: the moving average's (``train.ema`` > 0),
        else ``model`` itself. Either has the plain model's state dict keys."""
        return self.model if self.step.ema is None else self.step.ema.averaged.module

    @property
    def parts(self) -> dict[str, Any]:
        """The stateful pieces by the names a resume state stores them under (``ema`` only when on: it
        holds the averaged weights and their step count ``n_averaged``)."""
        parts = dict(
            model=self.model,
            optimizer=self.step.optimizer,
            schedule=self.step.schedule,
            scaler=self.step.scaler,
            sampler=self.train_loader.sampler,
        )
        if self.step.ema is not None:
            parts["ema"] = self.step.ema.averaged
        return parts


def set_up(config: RunConfig, train: Arrays | tuple, valid: Arrays | tuple) -> Run:
    """Seed every RNG with ``config.train.seed`` and build, in this order (each draws from the seeded
    RNGs, so the order is part of the result), the model and its initial weights, the loaders, the
    optimiser, the schedule, the grad scaler and (``train.ema`` > 0) the moving average of the weights,
    on ``config.compute.device``. Arguments as :func:`pipeline.train.fit.fit`. Raises UserError if the
    rank count does not divide ``batch_size``, for sync_batchnorm off CUDA, and as
    :func:`~pipeline.models.init.init_weights`, :func:`~pipeline.models.pretrained.load_encoder_weights`
    and the schedule do for a bad setting."""
    cfg, device, train, valid = config.train, config.compute.device, Arrays(*train), Arrays(*valid)
    seed_everything(cfg.seed)
    configure_backends(device.type, fixed_size=True)  # every training batch is size x size pixels
    rank, world = distributed.rank(), distributed.world_size()
    batch = distributed.per_rank_batch(cfg.batch_size, world)
    distributed.check_sync_batchnorm(config.sync_batchnorm, world, device.type)
    model = _model(config)
    size = config.image_size or train.images.shape[1]
    workers = resolve_num_workers(cfg.num_workers, device.type, nproc=distributed.local_world_size())
    jitter = jitter_strength(cfg.augment, cfg.augmentation)
    train_loader = _train_loader(config, train, size, workers)
    # Each valid image with only its own padding to a multiple of 32, as the evaluate stage takes it.
    shard_rows = range(rank, len(valid.images), world)
    own = own_padding(extents(valid.images.shape, valid.sizes))
    shard = Subset(SegmentationDataset(*valid[:2], sizes=own), shard_rows)
    step = _train_step(config, model, len(train_loader), jitter > 0)
    return Run(
        model=model,
        net=torch.compile(model) if choose_compile(cfg.compile, device.type).value else model,
        train_loader=train_loader,
        valid_loader=make_eval_loader(shard, batch, workers, device.type, own[shard_rows]),
        step=step,
        image_size=size,
        main=rank == 0,
        progress=config.progress and rank == 0,  # the other ranks write and print nothing
    )


def _train_loader(config: RunConfig, train: Arrays, size: int, workers: int) -> DataLoader | DeviceLoader:
    """The seeded training loader of ``size``-pixel samples: augmented per sample on ``workers`` worker
    processes, or (``config.augment_on`` "device") the split copied to the device once and each batch
    warped there, the loader drawing only each sample's affine map and jitter."""
    cfg, device, rank, world = config.train, config.compute.device, distributed.rank(), distributed.world_size()
    augment = train_transform(size, cfg.augment, cfg.augmentation, config.resize)
    jitter = jitter_strength(cfg.augment, cfg.augmentation)
    if config.augment_on == "device":
        spans = extents(train.images.shape, train.sizes)
        dataset = AffineDataset(spans, train.images.shape[1:3], augment, jitter, config.crops_per_image)
        loader = make_train_loader(dataset, cfg.batch_size, cfg.seed, workers, device.type, rank, world)
        return DeviceLoader(DeviceSplit.copy(train.images, train.masks, spans, device), loader, size)
    dataset = SegmentationDataset(*train[:2], augment, jitter, train.sizes, config.crops_per_image)
    return make_train_loader(dataset, cfg.batch_size, cfg.seed, workers, device.type, rank, world)


def _model(config: RunConfig) -> nn.Module:
    """The model of ``config`` with its initial and pretrained weights, its BatchNorm synchronised when
    asked, on the device in its memory format."""
    device = config.compute.device
    model = build_model(config.model, config.classes.logits, **config.arch)
    init_weights(model, config.train.init, config.train.zero_init_residual)
    load_encoder_weights(model, config.train.encoder_weights)
    model = distributed.convert_batchnorm(model, config.sync_batchnorm)
    return model.to(device, memory_format=memory_format(device.type))


def _train_step(config: RunConfig, model: nn.Module, batches: int, jitter: bool) -> TrainStep:
    """The optimiser of ``model``'s parameters, its schedule over epochs of ``batches`` batches, the
    loss, the grad scaler, the batch transfer (with colour ``jitter`` or not) and the moving average of
    the weights (:func:`weight_average`) of ``config``."""
    cfg, device, dtype = config.train, config.compute.device, config.compute.dtype
    fused = device.type == "cuda"
    optimizer = make_optimizer(cfg.optimizer, model.parameters(), cfg.lr, cfg.weight_decay, cfg.momentum, fused=fused)
    steps_per_epoch = len(accumulation_groups(batches, cfg.accumulate_steps))
    weights = None if config.class_weights is None else torch.tensor(config.class_weights, device=device)
    return TrainStep(
        loss_fn=loss_function(cfg.loss, config.classes.logits, weights),
        optimizer=optimizer,
        schedule=LrSchedule(cfg.scheduler, optimizer, steps_per_epoch, cfg.epochs, cfg.warmup_epochs),
        scaler=torch.amp.GradScaler(device.type, enabled=needs_grad_scaler(dtype)),
        move=Batch(device, device.type == "cuda", memory_format(device.type), jitter=jitter),
        dtype=dtype,
        accumulate_steps=cfg.accumulate_steps,
        grad_clip=cfg.grad_clip,
        ema=weight_average(model, cfg.ema),
    )


def weight_average(model: nn.Module, decay: float) -> WeightAverage | None:
    """The exponential moving average of the plain ``model``'s parameters and buffers, with ``decay`` in
    (0, 1) (``train.ema``), or None for ``decay`` 0 (off). torch's AveragedModel copies ``model`` on its
    device and draws no random numbers, so the rest of the set-up is as without it. Its step count lives on
    that device too: on the host, AveragedModel would copy it to the device at each update, once per dtype
    of the weights, each a blocking copy that waits for the device as a read does
    (:class:`~pipeline.train.loop.WeightAverage`)."""
    if decay == 0:
        return None
    device = next(model.parameters()).device
    averaged = AveragedModel(model, device, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    return WeightAverage(averaged, model)
