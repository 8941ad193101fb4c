"""Benchmark: can the training loader feed a GPU? Loader samples/s per worker against the rate a GPU job needs.

Usage: python bench/loader.py [--pets ../shared/data/oxford-iiit-pet-mini] [--images 200] [--size 256]
       [--batch-size 16] [--workers 0 2] [--seconds 5] [--gpu-tflops 300]

The loader (:func:`pipeline.data.loader.make_train_loader`, augmentation "full") ships uint8 samples
after the geometric ops (flips, crop) and each sample's colour-jitter factors; the jitter and the
normalisation run batch-wise on the device (:func:`pipeline.data.colour.model_input`). For contrast it
also times the same loader doing all of it per sample on the worker, as torchvision's ``ColorJitter``
and a float32 normalisation (the path before the split), on the same images.

The rate a GPU job needs is its achieved FLOP rate (``--gpu-tflops``, default 300: an H100 or H200 at
about 40 % of its ~790 TFLOP/s dense bf16 peak) over the FLOPs of one training image (forward and
backward, torch's FlopCounterMode) of each model at ``--size``. The output says how many workers at
the measured per-worker rate that takes, and whether the 8 an ``auto`` CUDA run starts keep up.

Not a test: numbers vary with load; the ratios measured in one run are the point.
"""

import argparse
import math
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torch.utils.flop_counter import FlopCounterMode
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import machine, table  # noqa: E402
from pipeline.data.colour import draw_jitter, model_input, normalize  # noqa: E402
from pipeline.data.dataset import SegmentationDataset, jitter_strength, train_transform  # noqa: E402
from pipeline.data.decode import load_pair  # noqa: E402
from pipeline.data.loader import MAX_AUTO_WORKERS, make_train_loader  # noqa: E402
from pipeline.data.split import make_split  # noqa: E402
from pipeline.models.registry import build_model  # noqa: E402
from pipeline.train.losses import bce_dice_loss  # noqa: E402

MODELS = {"UNet base 64": ("unet", {"base_channels": 64}), "ResNet34-UNet": ("resnet34_unet", {})}


class PerSampleColour(Dataset):
    """The loader's items with the colour jitter and normalisation done per sample on the worker (float32)."""

    def __init__(self, base: SegmentationDataset, strength: float):
        self.base = base
        self.jitter = v2.ColorJitter(brightness=strength, contrast=strength, saturation=strength)

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        image, mask, _ = self.base[i]
        return normalize(self.jitter(image).float() / 255.0), mask.float(), torch.zeros(6)


def build_images(pets: Path, n: int, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` train photos of the mini set resized to ``size`` px if it is there, else random arrays."""
    if (pets / "annotations" / "trimaps").is_dir():
        stems = make_split(pets, 0.1, 0).train[:n]
        pairs = [load_pair(pets, s, size, "pet") for s in stems]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs]), f"{len(stems)} photos of {pets}"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return images, rng.integers(0, 2, (n, size, size), dtype=np.uint8), f"{n} random images ({pets} not found)"


def loader_rate(ds: Dataset, batch: int, workers: int, seconds: float) -> float:
    """Samples/s of the training loader over whole epochs, after a first batch (worker start-up)."""
    loader = make_train_loader(ds, batch, seed=0, num_workers=workers, device_type="cpu")
    count, start, first = 0, 0.0, True
    while first or time.perf_counter() - start < seconds:
        for images, _, _ in loader:
            if first:
                first, start = False, time.perf_counter()
                continue
            count += len(images)
            if time.perf_counter() - start >= seconds:
                break
    return count / (time.perf_counter() - start)


def device_rate(images: torch.Tensor, strength: float, seconds: float) -> float:
    """Samples/s of the batch-wise colour jitter and normalisation, here on the CPU (a GPU does it far faster)."""
    jitter = torch.stack([draw_jitter(strength) for _ in images])
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        model_input(images, jitter)
        count += len(images)
    return count / (time.perf_counter() - start)


def train_flops(name: str, options: dict, size: int) -> float:
    """FLOPs of one training image of the model (forward and backward)."""
    model = build_model(name, **options)
    counter = FlopCounterMode(display=False)
    x, y = torch.randn(1, 3, size, size), torch.ones(1, 1, size, size)
    with counter:
        bce_dice_loss(model(x), y).backward()
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pets", default=str(Path(__file__).resolve().parents[2] / "shared/data/oxford-iiit-pet-mini"))
    parser.add_argument("--images", type=int, default=200, help="images in the benchmark dataset")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="worker counts to time")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement")
    parser.add_argument("--gpu-tflops", type=float, default=300.0, help="the GPU job's achieved TFLOP/s")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # more workers than cores
    torch.set_num_threads(1)  # as in each worker; the main process's threads would compete with them
    images, masks, source = build_images(Path(args.pets), args.images, args.size)
    strength = jitter_strength("full")
    shipped = SegmentationDataset(images, masks, train_transform(args.size, "full"), strength)
    paths = {
        "uint8 + jitter factors (now)": shipped,
        "float32, colour on the worker": PerSampleColour(shipped, strength),
    }
    print(f"{machine()}; {source}; {args.size} px, batch {args.batch_size}, {args.seconds:g} s per measurement")
    rows, per_worker = [], {}
    for label, ds in paths.items():
        for workers in args.workers:
            rate = loader_rate(ds, args.batch_size, workers, args.seconds)
            rows.append({"loader": label, "workers": workers or "0 (main process)", "samples/s": f"{rate:.0f}"})
            if workers:
                per_worker[label] = rate / workers
    print(table(rows))
    batch = torch.from_numpy(images[: args.batch_size]).permute(0, 3, 1, 2).contiguous()
    print(
        f"batch-wise jitter + normalisation, 1 CPU thread: {device_rate(batch, strength, args.seconds):.0f} samples/s"
    )
    cores = os.cpu_count() or 1
    rows = []
    for label, (name, options) in MODELS.items():
        flops = train_flops(name, options, args.size)
        needed = args.gpu_tflops * 1e12 / flops
        row = {"model": label, "GFLOP per image": f"{flops / 1e9:.1f}", "needed samples/s": f"{needed:.0f}"}
        for path, rate in per_worker.items():
            workers = math.ceil(needed / rate)
            verdict = "keeps up" if workers <= MAX_AUTO_WORKERS else "does not keep up"
            row[f"workers needed, {path}"] = f"{workers} ({verdict} with {MAX_AUTO_WORKERS})"
        rows.append(row)
    print(f"the GPU job at {args.gpu_tflops:g} TFLOP/s achieved; per-worker rates measured here ({cores} cores):")
    print(table(rows))


if __name__ == "__main__":
    main()
