"""Benchmark: our UNet and ResNet34-UNet against outside implementations at equal widths, on CPU.

Usage: python bench/models.py [--sizes 128 256] [--batch 8] [--repeats 3] [--threads 1]
                              [--models unet16 unet64 resnet34_unet] [--unet64-sizes 128] [--no-memory]

Needs the references: ``pip install -e .[bench]`` (segmentation-models-pytorch, MONAI). Pairs:

- ``unet16`` / ``unet64``: ``build_model("unet", base_channels=c)`` vs MONAI ``BasicUNet(spatial_dims=2,
  features=(c, 2c, 4c, 8c, 16c, c), norm="batch", act=ReLU(inplace), bias=False, dropout=None)``, the
  same widths, norm, activation and bias-free convs before BatchNorm as ours;
- ``resnet34_unet``: ``build_model("resnet34_unet", decoder_channels=[256, 128, 64, 32, 16])`` vs
  ``segmentation_models_pytorch.Unet("resnet34", encoder_weights=None, decoder_channels=(256, 128, 64, 32, 16))``.

For every size, one process times, per pair, a train step (forward, BCE + Dice loss, backward, AdamW
step; train mode) and an inference forward (eval mode, ``torch.inference_mode``) at batch ``--batch`` on
random data. The machine is shared and noisy, so the two models of a pair alternate: each repetition
times ours then the reference (the order flips every repetition), and the table shows the medians of
images/s and the median of the per-repetition ratios ours/reference (with their range): > 1 means
ours is faster. The ratio is also given from process CPU time (all threads), which a busy machine
disturbs less than wall-clock time. One intra-op thread by default (``--threads``). The base-64 UNet
pair runs only at ``--unet64-sizes`` (128 px by default: at 256 px a train step takes about a minute
here per model). Peak memory is measured afterwards, one fresh subprocess per (model, size): the growth
of the peak RSS (VmHWM) over a first inference forward, then over a first train step (which
also allocates gradients and AdamW state), above the RSS with the model and batch built. torch's CPU
allocator returns freed blocks to malloc, so this is what the step needs, not a cache.

Not a test: numbers vary with load; the ratios measured in one run are the point.
"""

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.models.registry import build_model  # noqa: E402
from pipeline.train.losses import bce_dice_loss  # noqa: E402

DECODER = (256, 128, 64, 32, 16)


def monai_unet(base: int) -> nn.Module:
    from monai.networks.nets import BasicUNet

    c = base
    return BasicUNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=1,
        features=(c, 2 * c, 4 * c, 8 * c, 16 * c, c),
        norm="batch",
        act=("relu", {"inplace": True}),
        bias=False,
        dropout=None,
    )


def smp_unet() -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet34", encoder_weights=None, decoder_channels=DECODER, classes=1)


# pair name → (our label, our builder, reference label, reference builder)
PAIRS: dict[str, tuple[str, Callable[[], nn.Module], str, Callable[[], nn.Module]]] = {
    "unet16": (
        "UNet b16",
        lambda: build_model("unet", base_channels=16),
        "MONAI BasicUNet",
        lambda: monai_unet(16),
    ),
    "unet64": (
        "UNet b64",
        lambda: build_model("unet", base_channels=64),
        "MONAI BasicUNet",
        lambda: monai_unet(64),
    ),
    "resnet34_unet": (
        "ResNet34-UNet",
        lambda: build_model("resnet34_unet", decoder_channels=list(DECODER)),
        "smp Unet r34",
        smp_unet,
    ),
}


def build(pair: str, side: str) -> nn.Module:
    _, ours, _, ref = PAIRS[pair]
    return (ours if side == "ours" else ref)()


def batch(n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 3, size, size)
    y = (torch.rand(n, 1, size, size) > 0.5).float()
    return x, y


class Runner:
    """One model with its AdamW optimizer; times a train step or an inference forward on a fixed batch."""

    def __init__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        self.model, self.x, self.y = model, x, y
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step(self) -> None:
        self.model.train()
        loss = bce_dice_loss(self.model(self.x), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def infer(self) -> None:
        self.model.eval()
        with torch.inference_mode():
            self.model(self.x)

    def seconds(self, what: str) -> tuple[float, float]:
        """Wall-clock and process CPU seconds (all threads) of one train step or inference forward."""
        fn = self.train_step if what == "train" else self.infer
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        return time.perf_counter() - wall, time.process_time() - cpu


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []:
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def params_m(model: nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def measure_speed(pairs: list[str], size: int, n: int, repeats: int) -> dict[str, dict]:
    """Interleaved timings at one size.

    Returns {pair: {"params": {"ours"|"ref": M}, "ours"|"ref": {"train"|"infer": [(wall s, CPU s), ...]}}}.
    """
    torch.manual_seed(0)
    x, y = batch(n, size)
    runners = {p: {side: Runner(build(p, side), x, y) for side in ("ours", "ref")} for p in pairs}
    out = {
        p: {
            "params": {side: params_m(r.model) for side, r in sides.items()},
            **{side: {"train": [], "infer": []} for side in sides},
        }
        for p, sides in runners.items()
    }
    for sides in runners.values():  # warm-up: one train step (allocates AdamW state) and one forward each
        for r in sides.values():
            r.train_step()
            r.infer()
    for rep in range(repeats):
        order = ("ours", "ref") if rep % 2 == 0 else ("ref", "ours")
        for p, sides in runners.items():
            for what in ("train", "infer"):
                for side in order:
                    out[p][side][what].append(sides[side].seconds(what))
        print(f"  {size} px: repetition {rep + 1}/{repeats} done", file=sys.stderr, flush=True)
    return out


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def memory_child(pair: str, side: str, size: int, n: int) -> None:
    """Subprocess body: print JSON {"infer": MB, "train": MB} of peak RSS growth (see the module doc).

    The peak is the process's VmHWM (Linux), reset to the current RSS first through
    /proc/self/clear_refs where allowed. Not ``ru_maxrss``: Linux carries it over from the parent
    across fork and exec, so a child of the benchmark would start at the parent's peak.
    """
    torch.manual_seed(0)
    x, y = batch(n, size)
    runner = Runner(build(pair, side), x, y)
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to VmRSS
    except OSError:
        pass
    base = _status_kib("VmRSS")
    runner.infer()
    after_infer = _status_kib("VmHWM")
    runner.train_step()
    after_train = _status_kib("VmHWM")
    print(json.dumps({"infer": (after_infer - base) / 1024, "train": (after_train - base) / 1024}))


def measure_memory(pair: str, side: str, size: int, n: int, threads: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--_memory", pair, side, str(size), "--batch", str(n), "--threads", str(threads)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def median_ratio(ours: list[float], ref: list[float]) -> tuple[float, float, float]:
    """Median, min and max over repetitions of ours/ref throughput (= ref seconds / our seconds);
    each repetition's two timings were taken back to back."""
    ratios = [r / o for o, r in zip(ours, ref, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


def row(size: int, pair: str, res: dict, n: int) -> str:
    ours_label, _, ref_label, _ = PAIRS[pair]
    params = f"{res['params']['ours']:.2f}/{res['params']['ref']:.2f}"
    cells = [f"{ours_label:13s} {ref_label:15s} {size:4d} {params:>11s}"]
    for what in ("train", "infer"):
        (o_wall, o_cpu), (r_wall, r_cpu) = (zip(*res[side][what], strict=True) for side in ("ours", "ref"))
        mid, lo, hi = median_ratio(o_wall, r_wall)
        speed = f"{n / statistics.median(o_wall):.2f}/{n / statistics.median(r_wall):.2f}"
        cells.append(f"{speed:>11s} {mid:5.2f}x ({lo:.2f}-{hi:.2f}) {median_ratio(o_cpu, r_cpu)[0]:5.2f}x")
    if "mem" in res["ours"]:
        mo, mr = res["ours"]["mem"], res["ref"]["mem"]
        cells += [f"{mo['train']:.0f}/{mr['train']:.0f}".rjust(9), f"{mo['infer']:.0f}/{mr['infer']:.0f}".rjust(9)]
    return "  ".join(cells)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per model (after one warm-up)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: on a shared machine two OpenMP threads that spin-wait for each "
        "other run several times slower and far noisier; see docs/bench-models.md)",
    )
    parser.add_argument("--models", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    parser.add_argument(
        "--unet64-sizes",
        type=int,
        nargs="+",
        default=[128],
        help="sizes at which the base-64 UNet pair runs (on 2 cores a train step at 256 px takes ~1 min; "
        "pass e.g. 128 256 for the full matrix)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--_memory", nargs=3, metavar=("PAIR", "SIDE", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args._memory:
        pair, side, size = args._memory
        memory_child(pair, side, int(size), args.batch)
        return

    load = Path("/proc/loadavg").read_text().split()[:3]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"(OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}), {cpu_name()}, batch {args.batch}, "
        f"{args.repeats} repetitions (medians); load average at start {' '.join(load)}"
    )
    results: list[tuple[int, str, dict]] = []
    start = time.perf_counter()
    for size in args.sizes:
        pairs = [p for p in args.models if p != "unet64" or size in args.unet64_sizes]
        if pairs:
            speed = measure_speed(pairs, size, args.batch, args.repeats)
            results += [(size, p, speed[p]) for p in pairs]
    if not args.no_memory:
        for size, pair, res in results:
            for side in ("ours", "ref"):
                res[side]["mem"] = measure_memory(pair, side, size, args.batch, args.threads)

    header = (
        f"{'model':13s} {'reference':15s} {'px':>4s} {'params M':>11s}  "
        + "  ".join(f"{w + ' img/s':>11s} {'wall ratio (range)':>18s} {'CPU r.':>6s}" for w in ("train", "infer"))
        + f"  {'train MB':>9s}  {'infer MB':>9s}"
    )
    print(header)
    print("-" * len(header))
    for size, pair, res in results:
        print(row(size, pair, res, args.batch))
    took = time.perf_counter() - start
    print(
        "pairs are ours/reference; ratio = ours/reference images/s, median over repetitions (> 1: ours faster), "
        "from wall-clock time and from process CPU time; MB = peak RSS growth over a first train step / inference "
        f"forward; took {took:.0f} s"
    )


if __name__ == "__main__":
    main()
