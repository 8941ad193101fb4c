"""Training a model: the epoch loop around :mod:`pipeline.train.loop` (best-valid-score checkpointing,
early stopping, resume) on what :mod:`pipeline.train.setup` builds."""

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from pipeline.core.constants import SCORE_LABELS
from pipeline.core.device import peak_memory_mib
from pipeline.core.errors import UserError
from pipeline.core.messages import hide_bar
from pipeline.data.classes import Classes, classes_to_json
from pipeline.data.geometry import Resize, resize_to_json
from pipeline.evaluate.confusion import task_metric
from pipeline.models.checkpoint import save_checkpoint
from pipeline.train import distributed
from pipeline.train.config import RunConfig
from pipeline.train.loop import EpochStats, train_epoch, validate
from pipeline.train.resume import capture, restore
from pipeline.train.setup import Arrays, Run, set_up

Log = Callable[[int, dict[str, float]], None]
SaveState = Callable[[dict[str, Any]], None]


def selection_metric(classes: Classes) -> str:
    """The valid score that chooses the checkpoint and drives early stopping: the task's score
    (:func:`pipeline.evaluate.confusion.task_metric`), the one the evaluate stage reports first."""
    return task_metric(classes.count)


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


@dataclass(frozen=True)
class Best:
    """The best epoch so far: its valid score (:func:`selection_metric`; -inf before any epoch), all its
    valid scores, its number (0 = none yet), the epochs trained since (what early stopping counts)
    and its weights, a CPU copy of the model's state dict (None before any epoch)."""

    score: float = -math.inf
    scores: dict[str, float] = field(default_factory=dict)
    epoch: int = 0
    since: int = 0
    weights: dict[str, torch.Tensor] | None = None

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Best":
        """The best epoch a resume state holds (the entries :meth:`state_values` names)."""
        return cls(state["best"], state["best_scores"], state["best_epoch"], state["since_best"], state["best_weights"])

    def state_values(self) -> dict[str, Any]:
        """This best epoch as the entries of a resume state; the names are the state's format
        (:data:`pipeline.train.resume.STATE_VERSION`), which states saved earlier must still match."""
        names = ("best", "best_epoch", "since_best", "best_scores", "best_weights")
        return dict(zip(names, (self.score, self.epoch, self.since, self.scores, self.weights), strict=True))

    def after(self, epoch: int, scores: dict[str, float], score: float, model: nn.Module) -> "Best":
        """The best epoch once ``epoch`` has scored ``scores`` (``score`` the selection metric's): that
        epoch with a copy of ``model``'s weights if ``score`` is strictly higher (a tie keeps the
        earlier epoch), else this one with one more epoch since."""
        if score > self.score:
            weights = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
            return Best(score, scores, epoch, 0, weights)
        return replace(self, since=self.since + 1)


def fit(
    config: RunConfig,
    train: Arrays,
    valid: Arrays,
    log: Log,
    state: dict[str, Any] | None = None,
    save_state: SaveState | None = None,
) -> FitResult:
    """Train ``config.model`` for ``config.classes`` and save the weights of the epoch with the best
    valid score (:func:`selection_metric`) to ``config.checkpoint``. With ``train.ema`` > 0 the weights
    validated, chosen and saved are the exponential moving average's (:attr:`pipeline.train.setup.Run.kept`).

    ``train`` and ``valid`` are :class:`~pipeline.train.setup.Arrays` (or their first two, images uint8 (N, S,
    S, 3) and masks uint8 (N, S, S): class indices, 255 ignored). Each epoch calls ``log(epoch, record)`` with
    train/loss, valid/loss, valid/dice (a multi-class task's mean class Dice, and valid/miou), lr (the lr of the
    epoch's first step), time/data_wait (share of the epoch's seconds spent waiting for the loader's next batch,
    not moving it to the device: :func:`pipeline.train.loop.train_epoch`) and, on CUDA,
    gpu/peak_memory_mib; then ``save_state(state)`` with everything needed to continue (``state`` given back
    resumes after its epoch with identical results on the CPU). The checkpoint
    (:func:`pipeline.models.checkpoint.save_checkpoint`, atomic) holds ``model``, ``arch``, ``state_dict``,
    ``out_channels``, ``classes``, ``epoch``, ``valid_dice`` (and ``valid_miou``) and ``image_size`` (the
    training images' side) and ``resize`` (the scale photos are taken at,
    :func:`pipeline.data.geometry.resize_to_json`). Raises UserError if the loss becomes non-finite (naming the
    epoch and step; the last good checkpoint is kept).

    Under torchrun (a process group, see :mod:`pipeline.train.distributed`) every rank calls this:
    ``batch_size`` is the global batch, each rank trains its share under DDP (SyncBatchNorm if
    ``config.sync_batchnorm``) and validates its shard; all get the same logged values and
    decisions. Only rank 0 writes the checkpoint, calls ``log`` and ``save_state`` and shows
    progress. Raises UserError if the rank count does not divide ``batch_size`` or sync_batchnorm
    is off CUDA, and for the settings :func:`set_up` refuses.
    """
    run = set_up(config, train, valid)
    best, first, stopped = Best(), 1, False
    if state is not None:
        restore(state, run.parts)
        best, first, stopped = Best.from_state(state), state["epoch"] + 1, state["stopped"]
        _keep(config, run, best)  # DVC deleted the checkpoint before rerunning the stage.
    start = time.perf_counter()
    best, last = _epochs(config, run, first, stopped, best, log, save_state)
    seconds = time.perf_counter() - start
    return FitResult(selection_metric(config.classes), best.score, best.epoch, last, first - 1, seconds)


def _keep(config: RunConfig, run: Run, best: Best) -> None:
    """Write ``best``'s weights as the checkpoint, on rank 0 only (every rank holds the same weights)."""
    if run.main:
        valid = {f"valid_{name}": value for name, value in best.scores.items()}
        classes = {"out_channels": config.classes.logits, "classes": classes_to_json(config.classes)}
        resize = resize_to_json(config.resize or Resize("square", run.image_size))
        info = {"epoch": best.epoch, **valid, **classes, "image_size": run.image_size, "resize": resize}
        save_checkpoint(config.checkpoint, config.model, config.arch, best.weights, **info)


def _epochs(
    config: RunConfig, run: Run, first: int, stopped: bool, best: Best, log: Log, save_state: SaveState | None
) -> tuple[Best, int]:
    """Train epochs ``first`` .. ``config.train.epochs`` (none if ``stopped``) or until early stopping,
    from the ``best`` epoch so far; returns the best epoch then and the last epoch trained."""
    patience = config.train.patience
    trainer = distributed.wrap(run.net)  # after loading the state: DDP starts every rank from rank 0's weights
    epoch = first - 1
    while not stopped and epoch < config.train.epochs:
        epoch += 1
        best, record = _epoch(config, run, trainer, epoch, best)
        if run.main:
            log(epoch, record)
        stopped = patience > 0 and best.since >= patience
        _tell(config, run, epoch, record, best, stopped)
        if save_state is not None and run.main:
            save_state(capture(run.parts, epoch=epoch, **best.state_values(), stopped=stopped))
    return best, epoch


def _epoch(config: RunConfig, run: Run, trainer: nn.Module, epoch: int, best: Best) -> tuple[Best, dict[str, float]]:
    """Train ``epoch`` with ``trainer`` (``run.net``, under DDP with several ranks), validate ``run.kept`` (the
    moving average of the weights when on), keep its weights if it is the best so far; returns the best epoch
    after it and the epoch's record."""
    step, lr = run.step, run.step.schedule.lr  # the lr of the epoch's first step
    stats = _train(config, run, trainer, epoch)
    distributed.broadcast_buffers(run.model)
    if run.kept is not run.model:  # the average of each rank's own BatchNorm statistics
        distributed.broadcast_buffers(run.kept)
    # An eager model: a compiled one would compile again for eval mode and for each new valid shape
    # (a last, smaller batch; keep_aspect's own sizes), 17-55 s each on this CPU (docs/performance.md#torchcompile).
    valid_loss, scores = validate(run.kept, run.valid_loader, step.loss_fn, step.move, step.dtype, config.classes.count)
    score = scores[selection_metric(config.classes)]
    step.schedule.epoch_end(score)
    best = best.after(epoch, scores, score, run.kept)
    if best.epoch == epoch:
        _keep(config, run, best)
    return best, _record(stats, valid_loss, scores, lr, step.move.device)


def _train(config: RunConfig, run: Run, trainer: nn.Module, epoch: int) -> EpochStats:
    """One training epoch under a progress bar. Raises UserError if its loss became non-finite."""
    desc = f"{config.model} epoch {epoch}/{config.train.epochs}"
    with tqdm(total=len(run.train_loader), desc=desc, unit="batch", disable=hide_bar(run.progress)) as bar:
        stats = train_epoch(trainer, run.train_loader, run.step, bar)
    if stats.bad_step:
        raise UserError(
            f"{config.model}: the training loss became non-finite at epoch {epoch}, step {stats.bad_step}; "
            f"{config.checkpoint} keeps the best weights so far. Lower lr or set grad_clip in params.yaml"
        )
    return stats


def _record(
    stats: EpochStats, valid_loss: float, scores: dict[str, float], lr: float, device: torch.device
) -> dict[str, float]:
    """What an epoch logs (see :func:`fit`), in the order dvclive writes it."""
    record = {
        "train/loss": stats.loss,
        "valid/loss": valid_loss,
        **{f"valid/{name}": value for name, value in scores.items()},
        "lr": lr,
        "time/data_wait": stats.data_seconds / stats.seconds,
    }
    peak = peak_memory_mib(device)  # read on every rank: it also resets the peak
    if peak is not None:
        record["gpu/peak_memory_mib"] = peak
    return record


def _tell(config: RunConfig, run: Run, epoch: int, record: dict[str, float], best: Best, stopped: bool) -> None:
    """Print the epoch's line, and the early stop's after it, where this process shows progress."""
    if not run.progress:
        return
    metric = selection_metric(config.classes)
    label = SCORE_LABELS[metric]
    tqdm.write(
        f"{config.model} epoch {epoch}: train loss {record['train/loss']:.4f}, valid loss {record['valid/loss']:.4f}, "
        f"valid {label} {record[f'valid/{metric}']:.4f} (best {best.score:.4f} @ {best.epoch})"
    )
    if stopped:
        tqdm.write(
            f"{config.model}: early stop at epoch {epoch}, no better valid {label} for {config.train.patience} epochs"
        )
