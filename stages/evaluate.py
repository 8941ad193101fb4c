"""Stages `evaluate-unet`, `evaluate-resnet34unet`: test-set metrics and predicted masks."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from pipeline.cli import run_stage
from pipeline.data import load_cache
from pipeline.errors import UserError
from pipeline.io import atomic_path, write_json
from pipeline.metrics import SegmentationMeter
from pipeline.params import get_float, get_int, load_params, section
from pipeline.training import load_checkpoint, predict_masks, select_device


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read evaluate.*, score the checkpoint on the test cache, write metrics and masks."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--checkpoint", required=True, help="model .pt written by the training stage")
    parser.add_argument("--test", required=True, help="test split cache (.npz)")
    parser.add_argument("--metrics", required=True, help="output metrics .json")
    parser.add_argument("--predictions", required=True, help="output predicted masks (.npz, bit-packed)")
    args = parser.parse_args(argv)
    params = section(load_params(args.params), "evaluate")
    threshold = get_float(params, "threshold", "evaluate.", minimum=0.0, maximum=1.0)
    if threshold in (0.0, 1.0):
        raise UserError(f"params.yaml: evaluate.threshold must be strictly between 0 and 1, got {threshold}")
    batch_size = get_int(params, "batch_size", "evaluate.", minimum=1)
    device = select_device()
    model, ckpt = load_checkpoint(Path(args.checkpoint), device)
    test = load_cache(Path(args.test))
    if test.images.shape[1] != ckpt["image_size"]:
        raise UserError(
            f"{args.test}: images are {test.images.shape[1]} px but {args.checkpoint} was trained at "
            f"{ckpt['image_size']} px; run dvc repro"
        )
    pred = predict_masks(model, test.images, batch_size, threshold, device)
    meter = SegmentationMeter(threshold)
    meter.add(torch.from_numpy(pred), torch.from_numpy(test.masks))
    metrics = {
        "model": ckpt["model"],
        **meter.compute(),
        "best_valid_dice": ckpt["valid_dice"],
        "best_epoch": ckpt["epoch"],
        "image_size": ckpt["image_size"],
    }
    with atomic_path(args.predictions) as tmp, open(tmp, "wb") as f:
        np.savez(f, masks=np.packbits(pred, axis=-1), shape=np.array(pred.shape), stems=np.array(test.stems))
    write_json(args.metrics, metrics)
    print(
        f"evaluate {ckpt['model']}: test Dice {metrics['dice']:.4f}, IoU {metrics['iou']:.4f} over {len(pred)} images"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
