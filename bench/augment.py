"""Benchmark: the geometric augmentation on the loader's workers (per sample) against the device path
(``train.augment_on: device``: the loader draws each sample's affine map, the batch is warped at once).

Usage: python bench/augment.py [--pets ../shared/data/oxford-iiit-pet-mini] [--images 200] [--seconds 5]
       [--threads 2] [--gpu-tflops 300]

Both paths are timed in the training process (no loader workers, as a CPU training runs), up to the uint8
batch ``train_epoch`` takes, with no model, on this CPU, at these settings: 256 px, batch 16, ``augment:
full`` (the GPU default), and the README's CPU settings (128 px, batch 8, ``augment: flip`` and ``full``).
The same code serves both models: their input pipelines are one. Also timed: the ``Batch`` move after
either (colour jitter and normalisation, the same on both paths), so the whole input pipeline's rate is
1 / (1 / loader + 1 / move); and the device path's CPU part alone (the loader drawing each sample's
parameters), the rate one process can feed a GPU that warps for free. For reference, what each model needs
at ``--gpu-tflops`` (bench/loader.py's estimate: achieved FLOP/s over one training image's FLOPs).
Measurements interleave over ``--repeats`` rounds; the table gives medians.

Not a test: numbers vary with load; the ratios measured in one run are the point.
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.loader import MODELS, build_images, train_flops  # noqa: E402
from bench.report import machine, table  # noqa: E402
from pipeline.core.device import memory_format  # noqa: E402
from pipeline.data.dataset import SegmentationDataset, jitter_strength, train_transform  # noqa: E402
from pipeline.data.device_augment import AffineDataset, DeviceLoader, DeviceSplit  # noqa: E402
from pipeline.data.geometry import extents  # noqa: E402
from pipeline.data.loader import make_train_loader  # noqa: E402
from pipeline.train.loop import Batch  # noqa: E402

CPU = torch.device("cpu")
# (image side in pixels, batch, augment): the GPU default, then the README's CPU settings.
SETTINGS = [(256, 16, "full"), (128, 8, "flip"), (128, 8, "full")]


def rate(batches, seconds: float) -> float:
    """Samples/s over whole epochs of ``batches``, after a first batch."""
    count, start, first = 0, 0.0, True
    while first or time.perf_counter() - start < seconds:
        for batch in batches:
            if first:
                first, start = False, time.perf_counter()
                continue
            count += len(batch[0])
            if time.perf_counter() - start >= seconds:
                break
    return count / (time.perf_counter() - start)


def move_rate(batch: tuple, jitter: bool, seconds: float) -> float:
    """Samples/s of the ``Batch`` move (colour jitter when ``jitter``, normalisation) of one batch on this CPU."""
    move = Batch(CPU, False, memory_format("cpu"), jitter=jitter)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        move(*batch)
        count += len(batch[0])
    return count / (time.perf_counter() - start)


def measure(images, masks, size: int, batch: int, level: str, seconds: float) -> dict[str, float]:
    """Samples/s of the worker path, the device path (warp on this CPU), the device path's draws alone and
    the ``Batch`` move."""
    transform, jitter = train_transform(size, level), jitter_strength(level)
    workers = make_train_loader(SegmentationDataset(images, masks, transform, jitter), batch, 0, 0, "cpu")
    spans = extents(images.shape, None)
    draws = make_train_loader(AffineDataset(spans, images.shape[1:3], transform, jitter), batch, 0, 0, "cpu")
    device = DeviceLoader(DeviceSplit.copy(images, masks, spans, CPU), draws, size)
    return {
        "workers": rate(workers, seconds),
        "device": rate(device, seconds),
        "draws": rate(draws, seconds),
        "move": move_rate(next(iter(device)), jitter > 0, seconds),
    }


def whole(loader: float, move: float) -> float:
    """Samples/s of a loader and a move one after the other."""
    return 1 / (1 / loader + 1 / move)


def row(setting: tuple[int, int, str], rounds: list[dict[str, float]]) -> dict[str, str]:
    """One setting's line of the table: medians over ``rounds``, and each round's device / workers ratio."""
    got = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    size, batch, level = setting
    return {
        "setting": f"{size} px, batch {batch}, augment {level}",
        "workers path": f"{got['workers']:.0f} samples/s",
        "device path, warp on this CPU": f"{got['device']:.0f}",
        "device / workers (per round)": " ".join(f"{r['device'] / r['workers']:.2f}x" for r in rounds),
        "draws alone": f"{got['draws']:.0f}",
        "Batch move": f"{got['move']:.0f}",
        "with the move, workers / device": f"{whole(got['workers'], got['move']):.0f} / "
        f"{whole(got['device'], got['move']):.0f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pets", default=str(Path(__file__).resolve().parents[2] / "shared/data/oxford-iiit-pet-mini"))
    parser.add_argument("--images", type=int, default=200, help="images in the benchmark dataset")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per measurement")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (medians reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (a CPU training's)")
    parser.add_argument("--gpu-tflops", type=float, default=300.0, help="the GPU job's achieved TFLOP/s")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{machine()}; {args.threads} threads, {args.seconds:g} s per measurement, {args.repeats} rounds")
    data = {size: build_images(Path(args.pets), args.images, size) for size in {s for s, _, _ in SETTINGS}}
    rounds = [[measure(*data[s][:2], s, b, lv, args.seconds) for s, b, lv in SETTINGS] for _ in range(args.repeats)]
    rows = [row(setting, [r[k] for r in rounds]) for k, setting in enumerate(SETTINGS)]
    print(f"{data[SETTINGS[0][0]][2]}; the input pipeline in the training process, no model:")
    print(table(rows))
    print(f"load average at the end: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    needed = [
        {"model": label, "needed samples/s at 256 px": f"{args.gpu_tflops * 1e12 / train_flops(name, opts, 256):.0f}"}
        for label, (name, opts) in MODELS.items()
    ]
    print(f"a GPU job at {args.gpu_tflops:g} TFLOP/s achieved needs:")
    print(table(needed))


if __name__ == "__main__":
    main()
