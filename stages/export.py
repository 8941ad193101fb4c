"""Stages `export@unet`, `export@resnet34_unet`: the trained model as ONNX, checked against PyTorch."""

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from pipeline.core.messages import plural
from pipeline.core.params import load_params
from pipeline.core.runner import run_stage
from pipeline.data.cache import load_cache
from pipeline.evaluate.export import export_checked
from pipeline.evaluate.inference import prepare
from pipeline.models.checkpoint import load_checkpoint


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read export.*, write the .onnx and check it on the first test images. Raises UserError."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--checkpoint", required=True, help="model .pt written by the training stage")
    parser.add_argument("--test", required=True, help="test split cache folder: images for the parity check")
    parser.add_argument("--out", required=True, help="output .onnx")
    args = parser.parse_args(argv)
    params = load_params(args.params).export
    opset, check_images, tolerance = params.opset, params.check_images, params.max_abs_diff
    model, ckpt = load_checkpoint(Path(args.checkpoint), torch.device("cpu"))
    images = prepare(load_cache(Path(args.test)).images[:check_images])
    metadata = {
        "model": ckpt["model"],
        "image_size": str(ckpt["image_size"]),
        "best_epoch": str(ckpt["epoch"]),
        "classes": json.dumps(ckpt["classes"]),
        "resize": json.dumps(ckpt["resize"]),
    }
    diff = export_checked(model, Path(args.out), metadata, images, opset, tolerance)
    checked = f"{len(images)} {plural(len(images), 'image')}"
    print(f"export {ckpt['model']}: {args.out}, max |logit difference| vs PyTorch {diff:.2e} on {checked}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
