"""Stage `plot`: learning curves, mask overlays, worst images, score distribution, per-breed and test score
figures, the test confusion matrices and per-class IoU, and the models' test scores side by side (the DVC
metrics file a reviewer compares).

A binary task's figures show the Dice and colour each prediction by outcome (true/false positive/negative);
a multi-class task's (the test cache's classes say which) show the mIoU and draw masks in the class
palette. Both write every file, so the stage's outputs are the same whatever the task: a binary task's
confusion matrix is 2x2 and its per-class bars are background and its class 1.
"""

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.io import write_json
from pipeline.core.params import load_params
from pipeline.core.runner import run_stage
from pipeline.data.cache import load_cache
from pipeline.report.class_figures import (
    class_iou,
    class_overlay_grid,
    class_worst_grid,
    confusion_figure,
    per_class_iou_bars,
    split_confusion,
)
from pipeline.report.inputs import (
    CURVES,
    MULTICLASS_CURVES,
    REDO_EVALUATE,
    load_predictions,
    read_curves,
    read_metrics,
    read_table,
)
from pipeline.report.mask_figures import overlay_grid, worst_grid
from pipeline.report.plots import (
    class_score_bars,
    dice_bars,
    dice_distribution,
    learning_curves,
    per_breed_bars,
    save_figure,
)
from pipeline.report.table import headline_keys, side_by_side

PER_MODEL = ("live", "metrics", "per_image", "per_breed", "predictions")
# The figures, each written to --<name>-png.
FIGURES = ("curves", "overlays", "worst", "distribution", "breeds", "dice", "confusion", "per-class-iou")


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read plot.*, check every input against the test cache, then write the eight PNG figures
    and the test scores.

    Raises UserError for a bad param, a missing or corrupt input, inputs of another test set or task, or
    a per-model option not given once per model.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--models", nargs="+", required=True, help="model names, in display order")
    parser.add_argument("--live", nargs="+", required=True, help="dvclive folder per model")
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics .json per model")
    parser.add_argument("--per-image", nargs="+", required=True, help="per-image .csv per model")
    parser.add_argument("--per-breed", nargs="+", required=True, help="per-breed .csv per model")
    parser.add_argument("--predictions", nargs="+", required=True, help="predictions .npz per model")
    parser.add_argument("--test", required=True, help="test split cache folder")
    parser.add_argument("--summary", required=True, help="output .json: the models' test scores side by side")
    for name in FIGURES:
        parser.add_argument(f"--{name}-png", required=True)
    args = parser.parse_args(argv)
    counts = {f"--{key.replace('_', '-')}": len(getattr(args, key)) for key in PER_MODEL}
    if any(n != len(args.models) for n in counts.values()):
        given = ", ".join(f"{n} {option}" for option, n in counts.items())
        raise UserError(f"plot: {len(args.models)} --models but {given}; give one path per model to each")
    params = load_params(args.params).plot
    num_images, worst, seed = params.num_images, params.worst, params.seed

    # Read and check every input before writing any figure, so a bad input leaves no PNG.
    test = load_cache(Path(args.test))
    classes = test.classes
    # A binary task's per-image and per-breed score is the Dice; a multi-class task's the mIoU, which an
    # image whose every pixel is ignored lacks (NaN).
    score, nullable = ("dice", ()) if classes.binary else ("miou", ("miou",))
    curves, metrics, per_image, per_breed, predictions, matrices = {}, {}, {}, {}, {}, {}
    for i, model in enumerate(args.models):
        curves[model] = read_curves(Path(args.live[i]), CURVES if classes.binary else MULTICLASS_CURVES)
        metrics[model] = read_metrics(Path(args.metrics[i]), classes)
        per_image[model] = read_table(Path(args.per_image[i]), ("stem",), (score,), nullable)
        per_breed[model] = read_table(Path(args.per_breed[i]), ("breed", "species"), ("images", score), nullable)
        predictions[model], stems = load_predictions(Path(args.predictions[i]))
        breeds = per_breed[model].groupby("breed")["images"].sum().to_dict()
        masks = predictions[model]
        same_masks = (
            stems == test.stems
            and np.array_equal(masks.shapes, test.native.shapes)
            and masks.depth == test.native.depth
        )
        for path, same in (
            (args.metrics[i], metrics[model]["images"] == len(test.stems)),
            (args.per_image[i], per_image[model]["stem"].tolist() == test.stems),
            (args.per_breed[i], breeds == Counter(test.breeds)),
            (args.predictions[i], same_masks),
        ):
            if not same:
                raise UserError(f"{path}: not about the {len(test.stems)} test images of {args.test}; {REDO_EVALUATE}")
        try:
            matrices[model] = split_confusion(test, {model: masks})[model]
        except ValueError as err:  # a predicted class index the task does not have
            raise UserError(f"{args.predictions[i]}: {err}; {REDO_EVALUATE}") from None
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(test.stems), min(num_images, len(test.stems)), replace=False))

    binary = classes.binary
    names = classes.names
    figures = {
        args.curves_png: learning_curves(curves, score),
        args.overlays_png: (overlay_grid if binary else class_overlay_grid)(test, predictions, per_image, chosen),
        args.worst_png: (worst_grid if binary else class_worst_grid)(test, predictions, per_image, worst),
        args.distribution_png: dice_distribution(per_image, score),
        args.breeds_png: per_breed_bars(per_breed, score),
        args.dice_png: dice_bars(metrics) if binary else class_score_bars(metrics),
        args.confusion_png: confusion_figure(matrices, names),
        args.per_class_iou_png: per_class_iou_bars(class_iou(matrices, names), names),
    }
    for path, fig in figures.items():
        save_figure(fig, Path(path))
    write_json(args.summary, side_by_side(metrics, headline_keys(classes)))
    print(f"plot: wrote {', '.join(figures)} and {args.summary}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
