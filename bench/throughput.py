"""Benchmarks on real pets: what the cache saves, and training speed of both models on this CPU.

Usage: python bench/throughput.py [--pets ../shared/data/oxford-iiit-pet-mini] [--size 128]

Prints, from one run on this machine (numbers vary with load; ratios are the point):
- images/s of one pass over the train images decoding JPEGs (what the cache avoids) vs reading the
  preprocess cache through the training Dataset with augmentation, and their ratio;
- training images/s of UNet (base_channels 16) and ResNet34-UNet at the CPU settings, and the
  estimated seconds per epoch for the 320 train images of the mini set.
"""

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.data.build import build_cache  # noqa: E402
from pipeline.data.dataset import SegmentationDataset, train_transform  # noqa: E402
from pipeline.data.decode import load_pair  # noqa: E402
from pipeline.data.split import make_split  # noqa: E402
from pipeline.models.registry import build_model  # noqa: E402
from pipeline.train.losses import bce_dice_loss  # noqa: E402


def rate(n: int, fn) -> float:
    start = time.perf_counter()
    fn()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pets", default=str(Path(__file__).resolve().parents[2] / "shared/data/oxford-iiit-pet-mini"))
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    root = Path(args.pets)
    stems = make_split(root, 0.1, 0).train
    cache = build_cache(root, stems, args.size, "pet", progress=False)
    ds = SegmentationDataset(cache.images, cache.masks, train_transform(args.size, "flip"))

    decode = rate(len(stems), lambda: [load_pair(root, s, args.size, "pet") for s in stems])
    cached = rate(len(ds), lambda: [ds[i] for i in range(len(ds))])
    print(f"data: decode JPEG {decode:7.1f} img/s | cache + augment {cached:7.1f} img/s | ratio {cached / decode:.1f}x")

    torch.manual_seed(0)
    x = torch.randn(args.batch, 3, args.size, args.size)
    y = (torch.rand(args.batch, 1, args.size, args.size) > 0.5).float()
    for name, options in (("unet", {"base_channels": 16}), ("resnet34_unet", {})):
        model = build_model(name, **options).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

        def steps(model=model, opt=opt, n=3):
            for _ in range(n):
                loss = bce_dice_loss(model(x), y)
                opt.zero_grad()
                loss.backward()
                opt.step()

        steps(n=1)  # warm-up
        speed = rate(3 * args.batch, steps)
        print(f"train {name:14s} {speed:6.1f} img/s → {len(stems) / speed:5.1f} s per epoch of {len(stems)} images")


if __name__ == "__main__":
    main()
