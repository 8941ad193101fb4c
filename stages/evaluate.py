"""Stages `evaluate@unet`, `evaluate@resnet34_unet`: test metrics at native resolution, breakdowns, masks.

One path for every task (:mod:`pipeline.evaluate.scoring`: per-image C×C confusion matrices, a binary
task being C = 2). ``--metrics`` is everything measured, git-tracked: the headline scores first (those the
plot stage gathers into the DVC metrics file of the test results: ``dice`` first for a binary task, ``miou``
for more classes), then the breakdowns, the threshold and TTA, throughput, device and ONNX parity.

A binary model (one logit) predicts class 1 where sigmoid > ``evaluate.threshold`` (``auto``: the best on
valid). A multi-class model (C logits) predicts each pixel's highest logit's class, so it has no threshold:
``evaluate.threshold`` is not used (``auto`` reads no valid split), and the metrics and the record beside
the weights hold ``"threshold": null``. The per-breed table and the metrics' ``species`` are written for a
dataset with breeds (the pets), not for a folder dataset, whose images are all of breed "unknown". The
predictions .npz holds the native-size label maps at the depth of the test cache's masks (bits for a binary
task, a byte a pixel for more classes).
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.constants import DEFAULT_THRESHOLD, SCORE_LABELS
from pipeline.core.device import decide
from pipeline.core.errors import UserError
from pipeline.core.io import atomic_path, write_csv, write_json
from pipeline.core.messages import plural
from pipeline.core.params import Evaluate, load_params
from pipeline.core.runner import run_stage
from pipeline.data.cache import CachedSplit, load_cache
from pipeline.data.geometry import describe, resize_to_json
from pipeline.data.masks import PackedMasks
from pipeline.evaluate.confusion import task_metric
from pipeline.evaluate.inference import LoadedModel, iter_logits, load_model, onnx_forward
from pipeline.evaluate.record import write_eval_record
from pipeline.evaluate.scoring import Scorer, ThresholdSearch
from pipeline.evaluate.tables import details, headline, per_breed_table, per_image_table


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read evaluate.*, score the checkpoint on the test cache, write metrics, tables and masks."""
    args = _parser().parse_args(argv)
    params = load_params(args.params)
    compute, said = decide(params.device, params.precision, params.threads)
    print(f"evaluate: {'; '.join(said)}")
    model = load_model(Path(args.checkpoint), compute.device, compute.dtype)
    onnx_diff = _onnx_parity(Path(args.onnx))
    tta, batch_size, window = params.evaluate.tta, params.evaluate.batch_size, params.evaluate.window
    test = _checked_split(args.test, model, args.checkpoint)
    threshold = None  # a multi-class model has none: `auto` searches nothing and reads no valid split
    if model.classes.binary:
        threshold = params.evaluate.threshold
        if threshold == "auto":
            valid = _checked_split(args.valid, model, args.checkpoint)
            threshold = _best_threshold(valid, model, params.evaluate)
    cut = DEFAULT_THRESHOLD if threshold is None else threshold
    scorer = Scorer(test.masks, test.native, model.classes.count, cut, test.native_ignore, test.sizes)
    seconds = 0.0
    # Batch by batch: the split's logits (N x L x H x W float32) are never held at once.
    for logits, spent in iter_logits(model.forward, test.images, batch_size, tta, window, test.sizes):
        scorer.add(logits)
        seconds += spent
    scored = scorer.result()
    names = model.classes.names
    per_image = per_image_table(scored, names, test.stems, test.breeds, test.species)
    metric = task_metric(model.classes.count)
    metrics = {
        **headline(scored),
        f"best_valid_{metric}": model.info[f"valid_{metric}"],
        "best_epoch": model.info["epoch"],
        **details(scored, names, test.species),
        **_run_facts(threshold, tta, model, len(test.stems) / seconds, compute.device.type, onnx_diff),
    }
    _write(args, model, test.stems, scored.predictions, per_image, per_breed_table(scored, per_image), metrics)
    _say(model, metrics, len(test.stems))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--checkpoint", required=True, help="model .pt written by the training stage")
    parser.add_argument("--onnx", required=True, help="the export stage's .onnx (for its parity metadata)")
    parser.add_argument("--valid", required=True, help="valid split cache folder, for threshold: auto")
    parser.add_argument("--test", required=True, help="test split cache folder")
    parser.add_argument("--metrics", required=True, help="output .json of what was measured")
    parser.add_argument("--per-image", required=True, help="output per-image .csv")
    parser.add_argument(
        "--per-breed", required=True, help="output per-breed .csv, for a dataset with breeds (the pets) only"
    )
    parser.add_argument("--predictions", required=True, help="output predicted native-size masks (.npz)")
    parser.add_argument("--record", required=True, help="output .json beside the weights: threshold and tta used")
    return parser


def _onnx_parity(path: Path) -> float:
    """The export's recorded largest logit difference. Raises UserError if the ONNX model lacks it."""
    _, meta = onnx_forward(path)
    try:
        return float(meta["onnx_max_abs_diff"])
    except (KeyError, ValueError):
        raise UserError(
            f"{path}: no onnx_max_abs_diff in its metadata; run `dvc repro -f` on its export stage"
        ) from None


def _checked_split(path: str, model: LoadedModel, checkpoint: str) -> CachedSplit:
    """The cache at ``path``. Raises UserError if its scale or classes are not those ``model`` was trained for."""
    split = load_cache(Path(path))
    if split.resize != model.resize:
        raise UserError(
            f"{path}: photos cached {describe(split.resize)} but {checkpoint} was trained on photos "
            f"{describe(model.resize)}; run dvc repro"
        )
    if split.classes.names != model.classes.names:
        raise UserError(
            f"{path}: classes {list(split.classes.names)} but {checkpoint} was trained for "
            f"{list(model.classes.names)}; run dvc repro"
        )
    return split


def _best_threshold(valid: CachedSplit, model: LoadedModel, settings: Evaluate) -> float:
    """``evaluate.threshold: auto``: the threshold of the best native Dice on ``valid``, batch by batch."""
    search = ThresholdSearch(valid.native, native_ignore=valid.native_ignore, sizes=valid.sizes)
    batches = iter_logits(model.forward, valid.images, settings.batch_size, settings.tta, settings.window, valid.sizes)
    for logits, _ in batches:
        search.add(logits)
    return search.best()


def _run_facts(
    threshold: float | None, tta: str, model: LoadedModel, images_per_s: float, device: str, onnx_diff: float
) -> dict:
    """The metrics' trailing keys, after the scores: how the scores were made and how fast (images/s of the
    forward alone), where, and the export's parity."""
    return {
        "threshold": threshold,
        "tta": tta,
        "image_size": model.image_size,
        "resize": resize_to_json(model.resize),
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
    per_breed: pd.DataFrame | None,
    metrics: dict,
) -> None:
    """Write the stage's outputs, the metrics last: the native-size predictions (.npz), the per-image table,
    the per-breed table where the dataset has breeds (else none, and none left from an earlier run), the eval
    record (the threshold and TTA ``metrics`` hold) and the metrics."""
    with atomic_path(args.predictions) as tmp, open(tmp, "wb") as f:
        np.savez(f, stems=np.array(stems), **predictions.to_arrays("masks"))
    write_csv(args.per_image, per_image)
    Path(args.per_breed).unlink(missing_ok=True)
    if per_breed is not None:
        write_csv(args.per_breed, per_breed)
    write_eval_record(Path(args.record), model.name, model.image_size, metrics["threshold"], metrics["tta"])
    write_json(args.metrics, metrics)


def _say(model: LoadedModel, metrics: dict, images: int) -> None:
    metric = task_metric(model.classes.count)
    how = f"threshold {metrics['threshold']}, " if model.classes.binary else ""
    print(
        f"evaluate {model.name}: test {SCORE_LABELS[metric]} {metrics[metric]:.4f} over {model.classes.count} classes "
        f"at native size ({metrics[f'{metric}_at_image_size']:.4f} at {model.image_size} px), {how}tta "
        f"{metrics['tta']}, {images} {plural(images, 'image')}"
    )


if __name__ == "__main__":
    sys.exit(run_stage(main))
