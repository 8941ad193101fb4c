"""Benchmark: our models' training step and inference per precision and memory format, against today's
fp32 NCHW path, against outside implementations, and against the CPU's peak FLOP rate.

Usage: python bench/models.py [--size 128] [--batch 8] [--repeats 5] [--threads 2] [--models unet16 resnet34_unet]

Needs the references: ``pip install -e .[bench]`` (segmentation-models-pytorch, MONAI). Pairs at equal widths:

- ``unet16``: ``build_model("unet", base_channels=16)`` vs MONAI ``BasicUNet(spatial_dims=2,
  features=(16, 32, 64, 128, 256, 16), norm="batch", act=ReLU(inplace), bias=False, dropout=None)``;
- ``resnet34_unet``: ``build_model("resnet34_unet", decoder_channels=[256, 128, 64, 32, 16])`` vs
  ``segmentation_models_pytorch.Unet("resnet34", encoder_weights=None, decoder_channels=(256, 128, 64, 32, 16))``.

Variants: ours in fp32 and bf16 autocast, each in NCHW and channels_last, and each reference in fp32 NCHW
and in the variant the pipeline chooses on this device (:func:`pipeline.core.device.choose_precision`
and :func:`~pipeline.core.device.memory_format`). A train step is forward, BCE + Dice loss, backward and
an AdamW step, in train mode; inference is a forward in eval mode under ``torch.inference_mode``, on
random data at batch ``--batch``. All variants of a model run in one process, interleaved: each
repetition times every variant once, in an order that rotates, so a change of load hits them alike;
the table gives median images/s and the median of the per-repetition ratios.

FLOPs per image come from torch's ``FlopCounterMode`` (forward and backward for a train step; a
multiply-add counts 2). Two references for them: the nominal peak, cores x clock x FLOPs per cycle,
stated in the output (AMD Zen 4 issues AVX-512 as two 256-bit halves: two FMA pipes x 8 fp32 lanes x 2 =
32 fp32 FLOPs per cycle and core, and VDPBF16PS's bf16 dot products 64; the clock is the CPU's maximum
from /sys, or /proc/cpuinfo's MHz, which a VM reports as its base clock); and the rate a large matrix
product (4096 x 4096, MKL through torch.mm) reaches on this machine at each precision, the practical
ceiling. A share above 100 % means the model's kernels do fewer multiplications than the counted
direct convolution (oneDNN's Winograd convolutions) or the cores ran above the stated clock.

Not a test: numbers vary with load; the ratios measured in one run are the point.
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import machine, table  # noqa: E402
from pipeline.core.device import autocast, choose_precision, memory_format, precision_name, probe  # noqa: E402
from pipeline.models.registry import build_model  # noqa: E402
from pipeline.train.losses import bce_dice_loss  # noqa: E402

DECODER = (256, 128, 64, 32, 16)
# fp32 FLOPs per cycle and core: two 256-bit FMA pipes (Zen 4 splits AVX-512 into two halves), 8 lanes, 2 FLOPs.
FP32_FLOPS_PER_CYCLE = 32
BF16_SPEED_UP = 2  # VDPBF16PS: a 256-bit half does 16 bf16 multiply-adds into 8 fp32 sums


def monai_unet() -> nn.Module:
    from monai.networks.nets import BasicUNet

    features = (16, 32, 64, 128, 256, 16)
    return BasicUNet(2, 3, 1, features, act=("relu", {"inplace": True}), norm="batch", bias=False, dropout=None)


def smp_unet() -> nn.Module:
    import segmentation_models_pytorch as smp

    return smp.Unet("resnet34", encoder_weights=None, decoder_channels=DECODER, classes=1)


# model → (our builder, reference label, reference builder)
PAIRS: dict[str, tuple[Callable[[], nn.Module], str, Callable[[], nn.Module]]] = {
    "unet16": (lambda: build_model("unet", base_channels=16), "MONAI BasicUNet", monai_unet),
    "resnet34_unet": (lambda: build_model("resnet34_unet", decoder_channels=list(DECODER)), "smp Unet", smp_unet),
}


class Variant:
    """A model at one precision (autocast dtype or None) and memory format, with its AdamW optimiser."""

    def __init__(self, model: nn.Module, dtype: torch.dtype | None, fmt: torch.memory_format, x, y):
        self.model = model.to(memory_format=fmt)
        self.dtype, self.x, self.y = dtype, x.contiguous(memory_format=fmt), y
        self.opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def train_step(self) -> None:
        self.model.train()
        with autocast("cpu", self.dtype):
            logits = self.model(self.x)
        loss = bce_dice_loss(logits.float(), self.y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def infer(self) -> None:
        self.model.eval()
        with torch.inference_mode(), autocast("cpu", self.dtype):
            self.model(self.x)

    def seconds(self, what: str) -> float:
        fn = self.train_step if what == "train" else self.infer
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start


def flops_per_image(model: nn.Module, x: torch.Tensor, y: torch.Tensor, what: str) -> float:
    """FLOPs of one image's train step (forward + backward) or inference forward, by FlopCounterMode."""
    counter = FlopCounterMode(display=False)
    with counter:
        if what == "train":
            bce_dice_loss(model(x), y).backward()
        else:
            with torch.no_grad():
                model(x)
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x)


def gemm_gflops(dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matrix product at ``dtype`` on this machine (the median of ``repeats``)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def clock_ghz() -> tuple[float, str]:
    """The CPU's maximum clock in GHz and where it was read."""
    limit = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if limit.exists():
        return int(limit.read_text()) / 1e6, "cpufreq max"
    mhz = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines() if "cpu MHz" in line]
    return max(mhz) / 1e3, "/proc/cpuinfo cpu MHz"


def label(dtype: torch.dtype | None, fmt: torch.memory_format) -> str:
    return f"{precision_name(dtype)} {'NHWC' if fmt == torch.channels_last else 'NCHW'}"


Key = tuple[str, str]  # (implementation: "ours" or the reference's label, variant label)
Times = dict[Key, dict[str, list[float]]]  # seconds per repetition, per step ("train", "infer")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per variant (after a warm-up)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--models", nargs="+", choices=list(PAIRS), default=list(PAIRS))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    caps = probe(torch.device("cpu"))
    chosen = (choose_precision("auto", caps).value, memory_format("cpu"))
    ghz, where = clock_ghz()
    peak = {None: args.threads * ghz * FP32_FLOPS_PER_CYCLE}
    peak[torch.bfloat16] = peak[None] * BF16_SPEED_UP
    gemm = {dtype: gemm_gflops(dtype or torch.float32) for dtype in peak}
    print(f"{machine()}; torch {torch.__version__}; {args.threads} threads; batch {args.batch} at {args.size} px")
    print(
        f"nominal peak: {args.threads} cores x {ghz:.2f} GHz ({where}) x {FP32_FLOPS_PER_CYCLE} fp32 FLOPs/cycle = "
        f"{peak[None]:.0f} GFLOP/s fp32, x {BF16_SPEED_UP} = {peak[torch.bfloat16]:.0f} bf16; a 4096^2 matrix product "
        f"reaches {gemm[None]:.0f} fp32, {gemm[torch.bfloat16]:.0f} bf16; chosen here: {label(*chosen)}"
    )
    rows = []
    for name in args.models:
        torch.manual_seed(0)
        x, y = torch.randn(args.batch, 3, args.size, args.size), (torch.rand(args.batch, 1, args.size, args.size) > 0.5)
        y = y.float()
        flops = {what: flops_per_image(PAIRS[name][0](), x[:1], y[:1], what) for what in ("train", "infer")}
        variants = build_variants(name, x, y, chosen)
        times = time_variants(name, variants, args.repeats)
        for key, variant in variants.items():
            gflops = {what: flops[what] * args.batch / statistics.median(times[key][what]) / 1e9 for what in flops}
            ceilings = {"of nominal peak": peak[variant.dtype], "of matrix product": gemm[variant.dtype]}
            rows += [row(name, key, what, times, args.batch, gflops[what], ceilings) for what in ("train", "infer")]
        per_image = f"{flops['train'] / 1e9:.2f} GFLOP per training image, {flops['infer'] / 1e9:.2f} per inference"
        print(f"  {name}: {per_image}")
    print(table(rows))


def build_variants(name: str, x: torch.Tensor, y: torch.Tensor, chosen: tuple) -> dict[Key, Variant]:
    """Ours in fp32 and bf16, each NCHW and NHWC; the reference in fp32 NCHW and in the ``chosen``
    (dtype, memory format); all on the same batch ``x``, ``y``."""
    ours, ref_label, ref = PAIRS[name]
    variants = {}
    for dtype in (None, torch.bfloat16):
        for fmt in (torch.contiguous_format, torch.channels_last):
            variants[("ours", label(dtype, fmt))] = Variant(ours(), dtype, fmt, x, y)
    nchw = torch.contiguous_format
    variants[(ref_label, label(None, nchw))] = Variant(ref(), None, nchw, x, y)
    variants[(ref_label, label(*chosen))] = Variant(ref(), *chosen, x, y)
    return variants


def time_variants(name: str, variants: dict[Key, Variant], repeats: int) -> Times:
    """Each variant's seconds per train step and per inference, ``repeats`` times after one warm-up,
    interleaved in a rotating order so that a change of load hits every variant alike."""
    times: Times = {key: {"train": [], "infer": []} for key in variants}
    for variant in variants.values():  # warm-up: AdamW state, oneDNN's kernels for each shape and format
        variant.train_step()
        variant.infer()
    keys = list(variants)
    for rep in range(repeats):
        for key in keys[rep % len(keys) :] + keys[: rep % len(keys)]:
            for what in ("train", "infer"):
                times[key][what].append(variants[key].seconds(what))
        print(f"  {name}: repetition {rep + 1}/{repeats}", file=sys.stderr, flush=True)
    return times


def row(
    name: str, key: Key, what: str, times: Times, batch: int, gflops: float, ceilings: dict[str, float]
) -> dict[str, str]:
    """The table's row of variant ``key`` at step ``what``: images/s, median ratios against ours in fp32
    NCHW and against the other implementation in the same variant, GFLOP/s and its share of each of
    ``ceilings`` (column name: GFLOP/s)."""
    secs, base = times[key][what], times[("ours", label(None, torch.contiguous_format))][what]
    ratio = statistics.median(b / s for b, s in zip(base, secs, strict=True))
    ref_label = PAIRS[name][1]
    same = (ref_label if key[0] == "ours" else "ours", key[1])
    vs_ref = ""
    if key[0] == "ours" and same in times:
        vs_ref = f"{statistics.median(o / s for o, s in zip(times[same][what], secs, strict=True)):.2f}x"
    return {
        "model": name if key[0] == "ours" else f"{name}: {key[0]}",
        "step": what,
        "variant": key[1],
        "images/s": f"{batch / statistics.median(secs):.1f}",
        "vs ours fp32 NCHW": f"{ratio:.2f}x",
        "ours vs reference, same variant": vs_ref,
        "GFLOP/s": f"{gflops:.0f}",
        **{column: f"{100 * gflops / ceiling:.0f} %" for column, ceiling in ceilings.items()},
    }


if __name__ == "__main__":
    main()
