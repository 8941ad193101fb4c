"""Stages `evaluate-unet`, `evaluate-resnet34unet`: test metrics at native resolution, breakdowns, masks.

``--metrics`` is everything measured, git-tracked: the headline scores first (those the plot stage
gathers into the DVC metrics file of the test results), then the breakdowns, the threshold and TTA,
throughput, device and ONNX parity.

A binary model (one logit) is scored by Dice at a threshold (``evaluate.threshold``, or ``auto``: the best
on valid), headline :data:`~pipeline.core.constants.HEADLINE_METRICS`. A multi-class model (C logits)
predicts each pixel's highest logit's class, so it has no threshold: ``evaluate.threshold`` is not used
(``auto`` searches nothing and reads no valid split), and the metrics and the record beside the weights
hold ``"threshold": null``. Its headline is :data:`~pipeline.core.constants.MULTICLASS_HEADLINE_METRICS`
(mIoU first), then ``per_class`` {name: {iou, dice, pixels}}, ``miou_per_image``, ``species``, ``images``
and the same trailing keys; its tables hold per-image and per-breed mIoU
(:mod:`pipeline.evaluate.multiclass`), its predictions .npz the label maps at depth 8 (``masks_depth``).
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.device import decide
from pipeline.core.errors import UserError
from pipeline.core.io import atomic_path, write_csv, write_json
from pipeline.core.messages import plural
from pipeline.core.params import load_params
from pipeline.core.runner import run_stage
from pipeline.data.cache import CachedSplit, load_cache
from pipeline.data.masks import PackedMasks
from pipeline.evaluate.inference import LoadedModel, iter_logits, load_model, onnx_forward
from pipeline.evaluate.multiclass import (
    ClassScorer,
    class_details,
    class_headline,
    class_per_breed_table,
    class_per_image_table,
    iter_class_logits,
)
from pipeline.evaluate.record import write_eval_record
from pipeline.evaluate.scoring import Scorer, ThresholdSearch, details, headline, per_breed_table, per_image_table


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read evaluate.*, score the checkpoint on the test cache, write metrics, tables and masks."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--checkpoint", required=True, help="model .pt written by the training stage")
    parser.add_argument("--onnx", required=True, help="the export stage's .onnx (for its parity metadata)")
    parser.add_argument("--valid", required=True, help="valid split cache folder, for threshold: auto")
    parser.add_argument("--test", required=True, help="test split cache folder")
    parser.add_argument("--metrics", required=True, help="output .json of what was measured")
    parser.add_argument("--per-image", required=True, help="output per-image .csv")
    parser.add_argument("--per-breed", required=True, help="output per-breed .csv")
    parser.add_argument("--predictions", required=True, help="output predicted native-size masks (.npz)")
    parser.add_argument("--record", required=True, help="output .json beside the weights: threshold and tta used")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    threshold, tta, batch_size = params.evaluate.threshold, params.evaluate.tta, params.evaluate.batch_size
    compute, said = decide(params.device, params.precision, params.threads)
    device = compute.device
    print(f"evaluate: {'; '.join(said)}")
    model = load_model(Path(args.checkpoint), device, compute.dtype)
    _, onnx_meta = onnx_forward(Path(args.onnx))
    try:
        onnx_diff = float(onnx_meta["onnx_max_abs_diff"])
    except (KeyError, ValueError):
        raise UserError(
            f"{args.onnx}: no onnx_max_abs_diff in its metadata; run `dvc repro -f` on its export stage"
        ) from None
    binary = model.classes.binary
    test = load_cache(Path(args.test))
    valid = load_cache(Path(args.valid)) if binary and threshold == "auto" else None
    for path, split in ((args.test, test), (args.valid, valid)):
        if split is not None and split.images.shape[1] != model.image_size:
            raise UserError(
                f"{path}: images are {split.images.shape[1]} px but {args.checkpoint} was trained at "
                f"{model.image_size} px; run dvc repro"
            )
        if split is not None and split.classes.names != model.classes.names:
            raise UserError(
                f"{path}: classes {list(split.classes.names)} but {args.checkpoint} was trained for "
                f"{list(model.classes.names)}; run dvc repro"
            )
    if not binary:
        _evaluate_classes(args, model, test, batch_size, tta, device.type, onnx_diff)
        return
    # Batch by batch: the split's logits (N x S x S float32, 3.8 GB for the full test split at 512 px)
    # are never held at once.
    if valid is not None:
        search = ThresholdSearch(valid.native, native_ignore=valid.native_ignore)
        for logits, _ in iter_logits(model.forward, valid.images, batch_size, tta):
            search.add(logits)
        threshold = search.best()
    scorer, seconds = Scorer(test.masks, test.native, threshold, test.native_ignore), 0.0
    for logits, spent in iter_logits(model.forward, test.images, batch_size, tta):
        scorer.add(logits)
        seconds += spent
    scored = scorer.result()
    per_image = per_image_table(scored, test.stems, test.breeds, test.species, test.native)
    metrics = {
        **headline(scored),
        "best_valid_dice": model.info["valid_dice"],
        "best_epoch": model.info["epoch"],
        **details(scored, test.species),
        **_run_facts(threshold, tta, model, len(test.stems) / seconds, device.type, onnx_diff),
    }
    _write(args, model, test.stems, scored.predictions, per_image, per_breed_table(scored, per_image), metrics)
    print(
        f"evaluate {model.name}: test Dice {metrics['dice']:.4f} at native size "
        f"({metrics['dice_at_image_size']:.4f} at {model.image_size} px), threshold {threshold}, tta {tta}, "
        f"{len(test.stems)} {plural(len(test.stems), 'image')}"
    )


def _run_facts(
    threshold: float | None, tta: str, model: LoadedModel, images_per_s: float, device: str, onnx_diff: float
) -> dict:
    """The metrics' trailing keys, after the scores: how the scores were made and how fast (images/s of the
    forward alone), where, and the export's parity."""
    return {
        "threshold": threshold,
        "tta": tta,
        "image_size": model.image_size,
        "images_per_s": images_per_s,
        "device": device,
        "onnx_max_abs_diff": onnx_diff,
    }


def _write(
    args: argparse.Namespace,
    model: LoadedModel,
    stems: list[str],
    predictions: PackedMasks,
    per_image: pd.DataFrame,
    per_breed: pd.DataFrame,
    metrics: dict,
) -> None:
    """Write the stage's outputs, the metrics last: the native-size predictions (.npz), both tables, the
    eval record (the threshold and TTA ``metrics`` hold) and the metrics."""
    with atomic_path(args.predictions) as tmp, open(tmp, "wb") as f:
        np.savez(f, stems=np.array(stems), **predictions.to_arrays("masks"))
    write_csv(args.per_image, per_image)
    write_csv(args.per_breed, per_breed)
    write_eval_record(Path(args.record), model.name, model.image_size, metrics["threshold"], metrics["tta"])
    write_json(args.metrics, metrics)


def _evaluate_classes(
    args: argparse.Namespace,
    model: LoadedModel,
    test: CachedSplit,
    batch_size: int,
    tta: str,
    device: str,
    onnx_diff: float,
) -> None:
    """The multi-class path of :func:`main`: score ``test`` by argmax at native and image size, write every
    output (``device`` the torch device type, ``onnx_diff`` the export's parity, both recorded as is)."""
    # Batch by batch: the split's logits (N x C x S x S float32) are never held at once.
    scorer, seconds = ClassScorer(test.masks, test.native, model.classes.count), 0.0
    for logits, spent in iter_class_logits(model.forward, test.images, batch_size, tta):
        scorer.add(logits)
        seconds += spent
    scored = scorer.result()
    per_image = class_per_image_table(scored, model.classes, test.stems, test.breeds, test.species)
    metrics = {
        **class_headline(scored),
        "best_valid_miou": model.info["valid_miou"],
        "best_epoch": model.info["epoch"],
        **class_details(scored, model.classes, test.species),
        **_run_facts(None, tta, model, len(test.stems) / seconds, device, onnx_diff),
    }
    _write(args, model, test.stems, scored.predictions, per_image, class_per_breed_table(scored, per_image), metrics)
    print(
        f"evaluate {model.name}: test mIoU {metrics['miou']:.4f} over {model.classes.count} classes at native size "
        f"({metrics['miou_at_image_size']:.4f} at {model.image_size} px), tta {tta}, "
        f"{len(test.stems)} {plural(len(test.stems), 'image')}"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
