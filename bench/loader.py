"""Benchmark: can the training loader keep up? Loader samples/s per worker count vs training samples/s.

Usage: python bench/loader.py [--pets ../shared/data/oxford-iiit-pet-mini] [--images 200] [--size 256]
       [--batch-size 16] [--workers 0 2 4] [--seconds 5]

Prints, from one run on this machine (numbers vary with load; ratios are the point):
- which images were used: real photos from the mini set resized to --size, or random uint8 arrays;
- samples/s of the seeded training loader (pipeline.data.loader.make_train_loader, "full" augmentation)
  at each worker count, after a warm-up batch (worker start-up is not counted), and the GPU
  training steps/s at --batch-size that rate could feed (samples/s / batch size);
- samples/s of one training step (forward + backward + AdamW) of UNet (base_channels 64) and
  ResNet34-UNet on this CPU, after one warm-up step at batch 2, and the ratio loader / step per worker count.
The loader is timed alone; during CPU training it shares the cores with the step.
"""

import argparse
import os
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data.dataset import SegmentationDataset, train_transform  # noqa: E402
from pipeline.data.decode import load_pair  # noqa: E402
from pipeline.data.loader import make_train_loader  # noqa: E402
from pipeline.data.split import make_split  # noqa: E402
from pipeline.models.registry import build_model  # noqa: E402
from pipeline.train.losses import bce_dice_loss  # noqa: E402

WARMUP_BATCH = 2
MODELS = (("unet", {"base_channels": 64}), ("resnet34_unet", {}))


def build_images(pets: Path, n: int, size: int) -> tuple[np.ndarray, np.ndarray, str]:
    """``n`` train photos of the mini set resized to ``size`` px if it is there, else random arrays."""
    if (pets / "annotations" / "trimaps").is_dir():
        stems = make_split(pets, 0.1, 0).train[:n]
        pairs = [load_pair(pets, s, size, "pet") for s in stems]
        images, masks = np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
        return images, masks, f"{len(stems)} real photos from {pets} resized to {size} px"
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    masks = rng.integers(0, 2, (n, size, size), dtype=np.uint8)
    return images, masks, f"{n} random uint8 images of {size} px ({pets} not found)"


def endless(loader) -> Iterator[torch.Tensor]:
    while True:
        for images, _ in loader:
            yield images


def loader_rate(ds: SegmentationDataset, batch: int, workers: int, seconds: float) -> float:
    """Samples/s of the training loader over whole epochs (epoch turnovers included)."""
    loader = make_train_loader(ds, batch, seed=0, num_workers=workers, device_type="cpu")
    batches = endless(loader)
    next(batches)  # warm-up: worker start-up and the first batch
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        count += len(next(batches))
    rate = count / (time.perf_counter() - start)
    batches.close()
    del loader  # stop its workers before the next measurement
    return rate


def step_rate(name: str, options: dict, batch: int, size: int, seconds: float) -> tuple[float, int]:
    """Training samples/s of ``name`` on this CPU and how many steps were timed (at least one)."""
    torch.manual_seed(0)
    model = build_model(name, **options).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, size, size)
    y = (torch.rand(batch, 1, size, size) > 0.5).float()

    def step(n: int) -> None:
        loss = bce_dice_loss(model(x[:n]), y[:n])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    # The one-time costs (thread pool, lazy init, AdamW state; ~5 s for ResNet34-UNet here) do not
    # depend on the batch, and a full-batch UNet warm-up would add over a minute. Any remaining
    # first-at-this-size cost falls in the timed steps, so the rate errs low, not high.
    step(WARMUP_BATCH)
    steps, start = 0, time.perf_counter()
    while steps == 0 or time.perf_counter() - start < seconds:
        step(batch)
        steps += 1
    return steps * batch / (time.perf_counter() - start), steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pets", default=str(Path(__file__).resolve().parents[2] / "shared/data/oxford-iiit-pet-mini"))
    parser.add_argument("--images", type=int, default=200, help="images in the benchmark dataset")
    parser.add_argument("--size", type=int, default=256, help="image side in pixels")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2, 4], help="worker counts to time")
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement (at least one step)")
    args = parser.parse_args()
    # DataLoader warns when workers exceed the cores; the oversubscription is reported below instead.
    warnings.filterwarnings("ignore", message="This DataLoader will create")

    cores = len(os.sched_getaffinity(0))
    over = [w for w in args.workers if w > cores]
    note = f"; {', '.join(map(str, over))} workers oversubscribe it" if over else ""
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"machine: {cores} CPU cores, torch uses {torch.get_num_threads()} threads{note}; load average {load}")
    images, masks, source = build_images(Path(args.pets), args.images, args.size)
    print(f"images: {source}")
    ds = SegmentationDataset(images, masks, train_transform(args.size, "full"))

    b = args.batch_size
    print(f'\nloader, augmentation "full", {args.size} px, batch {b} ({args.seconds:g} s each):')
    threads = torch.get_num_threads()
    settings = [(w, threads) for w in args.workers]
    if 0 in args.workers and threads > 1:
        # Contrast: the same main-process loading without intra-op threads.
        settings.insert(args.workers.index(0) + 1, (0, 1))
    loaders = {}
    for workers, main_threads in settings:
        torch.set_num_threads(main_threads)
        where = f"main process, {main_threads} thread{'s' * (main_threads > 1)}" if workers == 0 else "1 thread each"
        label = f"{workers} workers ({where})"
        loaders[label] = rate = loader_rate(ds, b, workers, args.seconds)
        print(f"  {label:35s} {rate:7.1f} samples/s -> could feed {rate / b:5.2f} GPU steps/s at batch {b}")
    torch.set_num_threads(threads)

    print(
        f"\ntraining step on this CPU (forward + backward + AdamW, batch {b}, {args.size} px,"
        f" after a warm-up step at batch {WARMUP_BATCH}):"
    )
    steps = {}
    for name, options in MODELS:
        label = name + "".join(f" {k}={v}" for k, v in options.items())
        steps[label], timed = step_rate(name, options, b, args.size, args.seconds)
        print(f"  {label:26s} {steps[label]:6.2f} samples/s ({b / steps[label]:5.1f} s/step, {timed} timed)")

    print("\nratio loader samples/s / step samples/s (> 1: the loader outpaces this CPU's training):")
    print("  " + " " * 35 + "".join(f"{label:>26s}" for label in steps))
    for label, rate in loaders.items():
        print(f"  {label:35s}" + "".join(f"{rate / s:25.1f}x" for s in steps.values()))
    print(f"\nload average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
