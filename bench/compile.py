"""Benchmark: ``torch.compile`` (inductor, default mode) against eager mode for both models' training step
and validation forward on this machine, what compiling costs, and whether it pays in a run of a given length.

Usage: python bench/compile.py [--size 128] [--batch 8] [--repeats 10] [--threads 2] [--models unet resnet34_unet]
                               [--epochs 40] [--steps-per-epoch 40] [--valid 36]

Each model is built as the training stage builds it (``unet``: base_channels 16; ``resnet34_unet``: the
default decoder), moved to :func:`~pipeline.core.device.memory_format`, and trained under the autocast dtype
that ``precision: auto`` resolves to here (:func:`~pipeline.core.device.choose_precision`), with AdamW
(lr 1e-3, weight decay 1e-4) and the ``ce_dice`` loss of one logit. Two copies start from the same
weights: one eager, one wrapped in ``torch.compile`` as :func:`pipeline.train.setup.set_up` wraps it (the
model only; loss and optimiser stay eager). A training step is forward, loss, backward and the AdamW step.

Measured, in one process:

- the losses of the first ``--check`` steps, eager and compiled, on the same batches: compiled training
  must give eager's losses within bf16 rounding (inductor fuses and reorders float operations);
- the compile time: the compiled model's first step (dynamo tracing, AOT autograd, inductor's C++ kernels)
  with an empty inductor cache, and again with the cache that first compile filled (after
  ``torch._dynamo.reset()``: what a later run on the same machine pays);
- the seconds of a training step, median of ``--repeats`` after warm-up, eager and compiled interleaved in a
  rotating order so that a change of load hits both alike; the ratio is the median of the per-repetition ratios;
  the same for this process's CPU seconds, which other jobs on the machine barely change (``--threads 1``);
- validation: the compiled model recompiles for eval mode and once more for a last, smaller batch
  (``--valid`` images at batch ``--batch``); the seconds of those first calls and of an eval forward (why
  the pipeline validates with the eager model);
- the seconds of a run of ``--epochs`` x ``--steps-per-epoch`` steps (the README's CPU run: 320 train
  images at batch 8 = 40 steps, 40 epochs, 36 valid images) from these: the first step, the others at the
  median, and the eager validation forwards.

Not a test: numbers vary with load; the ratios measured in one run are the point.
"""

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import machine, table  # noqa: E402
from pipeline.core.device import autocast, choose_precision, memory_format, precision_name, probe  # noqa: E402
from pipeline.models.registry import build_model  # noqa: E402
from pipeline.train.losses import loss_function  # noqa: E402

MODELS: dict[str, dict] = {"unet": {"base_channels": 16}, "resnet34_unet": {}}
BATCHES = 3  # distinct random batches the steps cycle through
# bf16 keeps 8 bits of mantissa (relative rounding 2^-8 = 0.4 %); a few steps' losses may drift a little more.
LOSS_RTOL = 2e-2


class Trainer:
    """A model with its AdamW optimiser, trained in ``dtype`` autocast (None = fp32) on the CPU."""

    def __init__(self, model: nn.Module, net: nn.Module, dtype: torch.dtype | None):
        self.model, self.net, self.dtype = model, net, dtype
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
        self.loss_fn = loss_function("ce_dice", 1)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        """One training step on images ``x`` float (N, 3, S, S), masks ``y`` float (N, 1, S, S); its loss."""
        self.net.train()
        with autocast("cpu", self.dtype):
            logits = self.net(x)
        loss = self.loss_fn(logits.float(), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    @torch.inference_mode()
    def infer(self, x: torch.Tensor) -> None:
        """One validation forward (eval mode) of ``x``."""
        self.net.eval()
        with autocast("cpu", self.dtype):
            self.net(x).float()


def seconds(fn: Callable[..., object], *args: object) -> float:
    """Wall seconds of ``fn(*args)``."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def make_batches(batch: int, size: int, fmt: torch.memory_format) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``BATCHES`` seeded random (images, masks) pairs: normal images in ``fmt``, masks in {0, 1, 255}."""
    gen = torch.Generator().manual_seed(0)
    out = []
    for _ in range(BATCHES):
        x = torch.randn(batch, 3, size, size, generator=gen).contiguous(memory_format=fmt)
        y = (torch.rand(batch, 1, size, size, generator=gen) > 0.5).float()
        y[:, :, :2] = 255  # a few ignored rows, as the pets' trimap boundary gives
        out.append((x, y))
    return out


def pair(name: str, dtype: torch.dtype | None, fmt: torch.memory_format) -> tuple[Trainer, Trainer]:
    """Eager and compiled trainers of model ``name`` from the same initial weights."""
    torch.manual_seed(0)
    model = build_model(name, **MODELS[name]).to(memory_format=fmt)
    twin = copy.deepcopy(model)
    return Trainer(model, model, dtype), Trainer(twin, torch.compile(twin), dtype)


def check(eager: Trainer, compiled: Trainer, batches: list, steps: int) -> dict[str, object]:
    """Train both ``steps`` steps from their common start on the same batches: each one's first step in
    seconds (the compiled one's includes compiling) and the losses of every step."""
    losses: dict[str, list[float]] = {"eager": [], "compiled": []}
    first = {}
    for key, trainer in (("eager", eager), ("compiled", compiled)):
        start = time.perf_counter()
        losses[key].append(trainer.step(*batches[0]))
        first[key] = time.perf_counter() - start
    for i in range(1, steps):
        for key, trainer in (("eager", eager), ("compiled", compiled)):
            losses[key].append(trainer.step(*batches[i % len(batches)]))
    return {"first": first, "losses": losses}


def time_steps(trainers: dict[str, Trainer], batches: list, repeats: int) -> dict[str, dict[str, list[float]]]:
    """Each trainer's wall ("wall") and this process's CPU ("cpu") seconds per training step, ``repeats``
    times after one warm-up step, alternating which goes first so that a change of load hits both alike.
    CPU seconds count only this process's own work, so under load they stay near a quiet machine's wall
    seconds on 1 thread (with more, OpenMP's spinning threads add to them)."""
    for trainer in trainers.values():
        trainer.step(*batches[0])
    times: dict[str, dict[str, list[float]]] = {key: {"wall": [], "cpu": []} for key in trainers}
    for rep in range(repeats):
        x, y = batches[rep % len(batches)]
        for key in list(trainers)[:: 1 if rep % 2 == 0 else -1]:
            cpu = time.process_time()
            times[key]["wall"].append(seconds(trainers[key].step, x, y))
            times[key]["cpu"].append(time.process_time() - cpu)
    return times


def time_eval(trainers: dict[str, Trainer], x: torch.Tensor, last: int, repeats: int) -> dict[str, dict[str, float]]:
    """Each trainer's validation forward: the first at batch ``len(x)`` (the compiled model's eval-mode
    compile), the first at the last batch of ``last`` images (0: none; a recompile for the new shape), and
    the median of ``repeats`` at batch ``len(x)``, in seconds."""
    out = {}
    for key, trainer in trainers.items():
        first = seconds(trainer.infer, x)
        first_last = seconds(trainer.infer, x[:last]) if last else 0.0
        out[key] = {"first": first, "first last": first_last}
    times: dict[str, list[float]] = {key: [] for key in trainers}
    for rep in range(repeats):
        for key in list(trainers)[:: 1 if rep % 2 == 0 else -1]:
            times[key].append(seconds(trainers[key].infer, x))
    for key in trainers:
        out[key]["median"] = statistics.median(times[key])
    return out


def warm_compile(name: str, dtype: torch.dtype | None, fmt: torch.memory_format, batch: tuple) -> float:
    """Seconds of a fresh compiled model's first training step once dynamo's in-memory caches are reset,
    the on-disk inductor cache kept: what a second run on this machine pays."""
    torch._dynamo.reset()
    _, compiled = pair(name, dtype, fmt)
    return seconds(compiled.step, *batch)


def run_seconds(first: float, step: float, ev: dict[str, float], args: argparse.Namespace) -> float:
    """Seconds of a run's training steps and validation forwards: its first step, the other steps at
    ``step`` s, and the validation forwards of the eager model ``ev`` (the pipeline validates eagerly:
    :func:`pipeline.train.fit.fit`) at its median, a partial batch in proportion to its images."""
    forwards = args.epochs * args.valid / args.batch  # in full batches' worth
    return first + (args.epochs * args.steps_per_epoch - 1) * step + forwards * ev["median"]


def measure(name: str, args: argparse.Namespace, dtype: torch.dtype | None, fmt: torch.memory_format) -> dict:
    """Every number of model ``name`` (see the module docstring)."""
    batches = make_batches(args.batch, args.size, fmt)
    eager, compiled = pair(name, dtype, fmt)
    trainers = {"eager": eager, "compiled": compiled}
    checked = check(eager, compiled, batches, args.check)
    steps = time_steps(trainers, batches, args.repeats)
    evals = time_eval(trainers, batches[0][0], args.valid % args.batch, max(3, args.repeats // 2))
    warm = warm_compile(name, dtype, fmt, batches[0])
    return {"check": checked, "steps": steps, "evals": evals, "warm": warm}


def rows(name: str, got: dict, args: argparse.Namespace) -> list[dict[str, str]]:
    """The table's rows of model ``name``: eager, then compiled."""
    steps, first, evals = got["steps"], got["check"]["first"], got["evals"]
    ratio = {
        clock: statistics.median(e / c for e, c in zip(steps["eager"][clock], steps["compiled"][clock], strict=True))
        for clock in ("wall", "cpu")
    }
    out = []
    for key in ("eager", "compiled"):
        step = statistics.median(steps[key]["wall"])
        total = run_seconds(first[key], step, evals["eager"], args)
        compiled = key == "compiled"
        out.append(
            {
                "model": name,
                "mode": key,
                "train step s (median)": f"{step:.3f}",
                "images/s": f"{args.batch / step:.1f}",
                "eager / compiled": f"{ratio['wall']:.2f}x" if compiled else "",
                "CPU s a step": f"{statistics.median(steps[key]['cpu']):.3f}",
                "eager / compiled, CPU s": f"{ratio['cpu']:.2f}x" if compiled else "",
                "first step s": f"{first[key]:.1f}",
                "warm-cache first step s": f"{got['warm']:.1f}" if compiled else "",
                "eval forward s": f"{evals[key]['median']:.3f}",
                "first eval s (full, last batch)": f"{evals[key]['first']:.1f}, {evals[key]['first last']:.1f}",
                f"run of {args.epochs}x{args.steps_per_epoch} steps s": f"{total:.0f}",
            }
        )
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=10, help="timed training steps per mode (after warm-up)")
    parser.add_argument("--check", type=int, default=4, help="steps whose losses are compared")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=40, help="epochs of the run the balance is for")
    parser.add_argument("--steps-per-epoch", type=int, default=40, help="training steps an epoch of that run")
    parser.add_argument("--valid", type=int, default=36, help="validation images an epoch of that run")
    args = parser.parse_args(argv)
    # An empty inductor cache, so that the first compile is what a first run on a machine pays.
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="bench-compile-"))
    torch.set_num_threads(args.threads)
    dtype, fmt = choose_precision("auto", probe(torch.device("cpu"))).value, memory_format("cpu")
    print(f"{machine()}; torch {torch.__version__}; {args.threads} threads; batch {args.batch} at {args.size} px")
    print(f"{precision_name(dtype)} autocast, {fmt}; inductor cache {os.environ['TORCHINDUCTOR_CACHE_DIR']}")
    out = []
    for name in args.models:
        got = measure(name, args, dtype, fmt)
        print(f"  {name}: measured: {rows(name, got, args)}", file=sys.stderr, flush=True)
        losses = got["check"]["losses"]
        diff = max(abs(a - b) / abs(a) for a, b in zip(losses["eager"], losses["compiled"], strict=True))
        verdict = "same" if diff <= LOSS_RTOL else "DIFFERENT"
        shown = ", ".join(f"{a:.4f}/{b:.4f}" for a, b in zip(losses["eager"], losses["compiled"], strict=True))
        print(f"  {name}: losses eager/compiled {shown}: largest relative difference {diff:.1e} ({verdict})")
        out += rows(name, got, args)
    print(table(out))


if __name__ == "__main__":
    main()
