"""Optimisers and learning-rate schedules for the training loop.

Units: a *step* is one optimiser step (an update of the weights; with gradient accumulation the
caller counts updates, not batches); warmup and run lengths are given in epochs.
"""

import copy
import math
from collections.abc import Iterable
from typing import Any

import torch
from torch.optim import lr_scheduler

from pipeline.core.constants import OPTIMIZERS, SCHEDULERS
from pipeline.core.errors import UserError

# Halve rather than torch's default x0.1: runs here are tens of epochs, and halving leaves room for
# several reductions before the lr becomes too small to move the weights.
PLATEAU_FACTOR = 0.5
# Valid Dice on a few hundred images moves by noise from one epoch to the next, so one or two flat
# epochs say little; three still lets a 40-epoch run reduce several times.
PLATEAU_PATIENCE = 3

# Param-group entries the schedules write. Saving them makes resuming independent of whether the
# optimiser's state or the schedule's is loaded first.
_GROUP_KEYS = ("lr", "momentum", "betas")


def make_optimizer(
    name: str,
    params: Iterable[torch.Tensor] | Iterable[dict[str, Any]],
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """The optimiser ``name`` (:data:`~pipeline.core.constants.OPTIMIZERS`) over ``params`` with learning rate ``lr``.

    - "adamw": AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"): Adam
      with the weight decay applied to the weights directly, ``w -= lr * weight_decay * w``, not
      added to the gradient. ``momentum`` is ignored (Adam's beta1, torch's 0.9, plays that role).
    - "sgd": SGD with heavy-ball momentum, not Nesterov: ``v = momentum * v + g; w -= lr * v``,
      where ``g`` includes the L2 term ``weight_decay * w`` (coupled, unlike AdamW's).

    ``fused``: AdamW's fused kernel, one launch for every parameter's update (CUDA; the same
    arithmetic as the per-tensor loop). Raises UserError for any other name.
    """
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=False)
    raise UserError(f"params.yaml: optimizer must be one of {', '.join(OPTIMIZERS)}; got {name!r}")


def _round_half_up(x: float) -> int:
    # Not round(): ties to even would make 2.5 warmup steps 2 but 3.5 steps 4.
    return math.floor(x + 0.5)


def _warmup_steps(name: str, steps_per_epoch: int, epochs: int, warmup_epochs: float) -> int:
    """W, the warmup in optimiser steps, once the settings of :class:`LrSchedule` are checked; raises
    UserError as it says."""
    if name not in SCHEDULERS:
        raise UserError(f"params.yaml: scheduler must be one of {', '.join(SCHEDULERS)}; got {name!r}")
    if steps_per_epoch < 1 or epochs < 1:
        raise UserError(
            f"lr schedule needs >= 1 epoch of >= 1 optimiser step, got {epochs} epochs of {steps_per_epoch} "
            "steps; check epochs, batch_size and that the training set is not empty"
        )
    total = epochs * steps_per_epoch
    # The range first: a NaN or infinite warmup_epochs has no number of steps.
    if not 0 <= warmup_epochs < epochs or _round_half_up(warmup_epochs * steps_per_epoch) >= total:
        raise UserError(
            f"params.yaml: warmup_epochs must be >= 0 and leave at least one of the {total} optimiser steps "
            f"({epochs} epochs of {steps_per_epoch}) after warmup, got {warmup_epochs}"
        )
    warmup = _round_half_up(warmup_epochs * steps_per_epoch)
    if name == "onecycle" and warmup_epochs > 0 and warmup < 2:
        raise UserError(
            f"params.yaml: onecycle warmup_epochs={warmup_epochs} is {warmup} optimiser step(s) "
            f"({steps_per_epoch} per epoch); its lr rise needs >= 2, or 0 for torch's default 30%"
        )
    return warmup


class LrSchedule:
    """The learning-rate schedule ``name`` (one of :data:`~pipeline.core.constants.SCHEDULERS`) driving ``optimizer``.

    Call :meth:`step` after every optimiser step and :meth:`epoch_end` once per epoch after
    validation. ``steps_per_epoch`` counts optimiser steps, so a run has ``T = epochs *
    steps_per_epoch`` steps; ``lr`` below is the optimiser's lr when the schedule is built (per
    param group). Warmup lasts ``W = warmup_epochs * steps_per_epoch`` steps, rounded half up;
    0 steps means none. Optimiser step ``t`` (0-based, i.e. the lr of the (t+1)-th update) uses:

    - linear warmup (cosine, constant, plateau), ``t < W``: ``lr * (t + 1) / W``, so step W-1 is
      the first at the full ``lr``.
    - "cosine", ``t >= W``: ``lr * (1 + cos(pi * (t - W) / (T - W))) / 2`` (Loshchilov & Hutter
      2017, SGDR, without restarts). Step W uses ``lr``; the last step, T-1, a still positive lr;
      after the final :meth:`step` the lr is 0 and stays 0. With W = 0 this is torch's
      ``CosineAnnealingLR(T_max=T)``.
    - "constant", ``t >= W``: ``lr``.
    - "plateau", ``t >= W``: ``lr``, multiplied by :data:`PLATEAU_FACTOR` whenever valid Dice has
      not improved for more than :data:`PLATEAU_PATIENCE` epochs (torch's
      ``ReduceLROnPlateau(mode="max")``): a reduction comes at the (PATIENCE+1)-th consecutive
      epoch_end without improvement, and the count then restarts. An improvement means Dice above
      the best so far by more than a relative 1e-4; reductions smaller than 1e-8 are skipped (both
      torch defaults). Epochs that end before warmup is over are not counted: their Dice was
      measured at a still-rising lr.
    - "onecycle": torch's ``OneCycleLR(max_lr=lr, total_steps=T)`` (Smith & Topin 2017, "Super-
      Convergence", arXiv:1708.07120): cosine-shaped from ``lr / 25`` at step 0 up to ``lr`` at
      step P-1, then down to ``lr / 25 / 1e4`` at step T-1, where P = W (its ``pct_start`` is
      W / T, i.e. ``warmup_epochs / epochs`` up to the rounding of W) or, with
      ``warmup_epochs = 0``, torch's default 0.3 * T. Stepping past T steps raises ValueError. As
      torch does by default, it also cycles SGD's momentum / AdamW's beta1 the other way, 0.95 ->
      0.85 at the peak -> 0.95, overriding the optimiser's own value.

    Raises UserError for an unknown name, steps_per_epoch or epochs below 1, a warmup_epochs that
    is negative or leaves no step after warmup, and, for onecycle, a warmup_epochs > 0 of fewer
    than 2 steps (its rise needs a start and a peak).
    """

    def __init__(
        self,
        name: str,
        optimizer: torch.optim.Optimizer,
        steps_per_epoch: int,
        epochs: int,
        warmup_epochs: float = 0.0,
    ) -> None:
        warmup = _warmup_steps(name, steps_per_epoch, epochs, warmup_epochs)
        self.name = name
        self.optimizer = optimizer
        self.total_steps = epochs * steps_per_epoch
        self.warmup_steps = warmup
        # What the lrs depend on; a saved state is only valid for a schedule built the same way.
        self._config = {
            "name": name,
            "steps_per_epoch": steps_per_epoch,
            "epochs": epochs,
            "warmup_steps": warmup,
            "lrs": [float(group["lr"]) for group in optimizer.param_groups],
        }
        self._steps = 0
        self._plateau: lr_scheduler.ReduceLROnPlateau | None = None
        self._schedulers: list[lr_scheduler.LRScheduler] = [self._per_step()]
        if name == "plateau":
            self._plateau = lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=PLATEAU_FACTOR, patience=PLATEAU_PATIENCE
            )
            self._schedulers.append(self._plateau)

    def _per_step(self) -> lr_scheduler.LRScheduler:
        """The torch scheduler that :meth:`step` advances: OneCycleLR for "onecycle", else a LambdaLR of
        :meth:`_factor`."""
        if self.name == "onecycle":
            # A warmup of 0 steps leaves OneCycleLR its own default rise (30 % of the run).
            pct_start = {"pct_start": self.warmup_steps / self.total_steps} if self.warmup_steps else {}
            return lr_scheduler.OneCycleLR(
                self.optimizer, max_lr=self._config["lrs"], total_steps=self.total_steps, **pct_start
            )

        # A def, not a bound method: LambdaLR's state_dict skips plain functions but would try
        # to save a method's attributes.
        def factor(t: int) -> float:
            return self._factor(t)

        return lr_scheduler.LambdaLR(self.optimizer, factor)

    def _factor(self, t: int) -> float:
        """Multiplier of the base lr at step ``t`` for cosine, constant and plateau's warmup."""
        if t < self.warmup_steps:
            return (t + 1) / self.warmup_steps
        if self.name != "cosine":
            return 1.0
        decay = self.total_steps - self.warmup_steps
        # min(): past the end the lr stays 0 instead of rising again as CosineAnnealingLR's does.
        return 0.5 * (1.0 + math.cos(math.pi * min(t - self.warmup_steps, decay) / decay))

    def step(self) -> None:
        """Advance one optimiser step; call right after ``optimizer.step()``."""
        # After warmup plateau's lr belongs to ReduceLROnPlateau; stepping the warmup LambdaLR
        # on would reset it to the base lr, undoing reductions.
        if self._plateau is None or self._steps < self.warmup_steps:
            self._schedulers[0].step()
        self._steps += 1

    def epoch_end(self, valid_dice: float) -> None:
        """Report an epoch's valid Dice (in [0, 1]); only "plateau" uses it, after warmup."""
        if self._plateau is not None and self._steps >= self.warmup_steps:
            self._plateau.step(valid_dice)

    @property
    def lr(self) -> float:
        """The lr of param group 0 for the next optimiser step."""
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the schedule, plain Python values (``torch.load(weights_only=True)`` can read it).

        To resume: build the optimiser and this schedule as for a fresh run, then load the
        optimiser's state (it holds the per-weight moments) and this one, in either order.
        """
        return copy.deepcopy(
            {
                "config": self._config,
                "steps": self._steps,
                "groups": [{k: g[k] for k in _GROUP_KEYS if k in g} for g in self.optimizer.param_groups],
                "schedulers": [s.state_dict() for s in self._schedulers],
            }
        )

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`'s snapshot, including the optimiser's lr (and momentum/betas).

        Raises UserError if it was saved by a schedule built differently (name, steps, epochs,
        warmup or lr), whose lrs would not continue this one's.
        """
        if state["config"] != self._config:
            raise UserError(
                f"saved lr schedule {state['config']} differs from this run's {self._config}; "
                "resume with the same params or train afresh"
            )
        state = copy.deepcopy(state)
        self._steps = state["steps"]
        for scheduler, saved in zip(self._schedulers, state["schedulers"], strict=True):
            scheduler.load_state_dict(saved)
        for group, saved in zip(self.optimizer.param_groups, state["groups"], strict=True):
            group.update(saved)
