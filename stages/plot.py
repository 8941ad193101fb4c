"""Stage `plot`: learning curves, mask overlays, worst images, score distribution, per-breed (for a dataset
with breeds: the pets) and test score figures, the test confusion matrices and per-class IoU, and the models'
test scores side by side (the DVC metrics file a reviewer compares).

One set of figures for every task: each shows the task's score (the Dice of class 1 for a binary task, the
mIoU for more classes: the test cache's classes say which) and draws masks in the classes' palette, wrong
pixels marked. Inputs come by folder (:mod:`pipeline.report.files`): the dvclive folders, the evaluate
stages' tables and their predictions, one file or folder per model named after it; the figures go into one
folder under fixed names (:data:`pipeline.report.files.FIGURES`).
"""

import argparse
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.constants import headline_keys
from pipeline.core.errors import UserError
from pipeline.core.io import write_json
from pipeline.core.params import load_params
from pipeline.core.runner import run_stage
from pipeline.data.cache import CachedSplit, load_cache
from pipeline.data.masks import PackedMasks
from pipeline.data.sources import any_known
from pipeline.evaluate.confusion import task_metric
from pipeline.report.class_figures import confusion_figure, per_class, per_class_bars, split_confusion
from pipeline.report.files import FIGURES, model_files
from pipeline.report.inputs import REDO_EVALUATE, load_predictions, read_curves, read_metrics, read_table
from pipeline.report.mask_figures import overlay_grid, worst_grid
from pipeline.report.plots import learning_curves, per_breed_bars, save_figure, score_bars, score_distribution
from pipeline.report.table import class_ious, side_by_side


@dataclass
class Inputs:
    """Every model's inputs, read and checked against the test split, by model name in display order;
    ``per_breed`` is empty for a dataset without breeds."""

    curves: dict[str, pd.DataFrame]
    metrics: dict[str, dict]
    per_image: dict[str, pd.DataFrame]
    per_breed: dict[str, pd.DataFrame]
    predictions: dict[str, PackedMasks]
    matrices: dict[str, np.ndarray]


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read plot.*, check every input against the test cache, then write the figures and the
    test scores. Raises UserError for a bad param, a missing or corrupt input, or inputs of another test
    set or task."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--models", nargs="+", required=True, help="model names, in display order")
    parser.add_argument("--live", required=True, help="folder of the dvclive folders, one per model")
    parser.add_argument("--evaluation", required=True, help="folder of the evaluate stages' folders, one per model")
    parser.add_argument("--predictions", required=True, help="folder of the evaluate stages' predictions (.npz)")
    parser.add_argument("--test", required=True, help="test split cache folder")
    parser.add_argument("--plots", required=True, help="output folder of the figures")
    parser.add_argument("--summary", required=True, help="output .json: the models' test scores side by side")
    args = parser.parse_args(argv)
    params = load_params(args.params).plot
    # Read and check every input before writing any figure, so a bad input leaves no PNG.
    test = load_cache(Path(args.test))
    inputs = _read(args, test)
    rng = np.random.default_rng(params.seed)
    chosen = np.sort(rng.choice(len(test.stems), min(params.num_images, len(test.stems)), replace=False))
    score, names = task_metric(test.classes.count), test.classes.names
    iou = per_class(inputs.matrices, names)
    figures = {
        "curves": learning_curves(inputs.curves, score),
        "overlays": overlay_grid(test, inputs.predictions, inputs.per_image, chosen, score),
        "worst": worst_grid(test, inputs.predictions, inputs.per_image, params.worst, score),
        "distribution": score_distribution(inputs.per_image, score),
        **({"breeds": per_breed_bars(inputs.per_breed, score)} if inputs.per_breed else {}),
        "scores": score_bars(inputs.metrics, test.classes.count),
        "confusion": confusion_figure(inputs.matrices, names),
        "per_class": per_class_bars(iou, names),
        "recall": per_class_bars(per_class(inputs.matrices, names, "recall"), names, "recall"),
    }
    # A per-breed figure left by an earlier run on the pets is not about this dataset.
    (Path(args.plots) / FIGURES["breeds"]).unlink(missing_ok=True)
    for name, fig in figures.items():
        save_figure(fig, Path(args.plots) / FIGURES[name])
    summary = side_by_side(inputs.metrics, headline_keys(test.classes.count))
    # Two classes: the headline's iou is class 1's already.
    write_json(args.summary, summary | (class_ious(iou) if test.classes.count > 2 else {}))
    print(f"plot: wrote {len(figures)} figures in {args.plots} and {args.summary}")


def _read(args: argparse.Namespace, test: CachedSplit) -> Inputs:
    """Each model's inputs (:func:`pipeline.report.files.model_files`), checked to be about ``test``'s images.
    Raises UserError naming the first file that is missing, corrupt or about other images."""
    count = test.classes.count
    score = task_metric(count)
    # An image whose every pixel is ignored has no mIoU (NaN); a binary image always has a Dice.
    nullable = () if count == 2 else (score,)
    breeds = any_known(test.breeds)  # a folder dataset's are all "unknown": it has no per-breed table
    inputs = Inputs({}, {}, {}, {}, {}, {})
    for model in args.models:
        files = model_files(model, Path(args.live), Path(args.evaluation), Path(args.predictions))
        inputs.curves[model] = read_curves(files.live, score)
        inputs.metrics[model] = metrics = read_metrics(files.metrics, count)
        inputs.per_image[model] = per_image = read_table(files.per_image, ("stem",), (score,), nullable)
        if breeds:
            inputs.per_breed[model] = _read_per_breed(files.per_breed, test, nullable, args.test)
        masks, stems = load_predictions(files.predictions)
        inputs.predictions[model] = masks
        same_masks = (
            stems == test.stems
            and np.array_equal(masks.shapes, test.native.shapes)
            and masks.depth == test.native.depth
        )
        for path, same in (
            (files.metrics, metrics["images"] == len(test.stems)),
            (files.per_image, per_image["stem"].tolist() == test.stems),
            (files.predictions, same_masks),
        ):
            if not same:
                raise UserError(f"{path}: not about the {len(test.stems)} test images of {args.test}; {REDO_EVALUATE}")
        try:
            inputs.matrices[model] = split_confusion(test, {model: masks})[model]
        except ValueError as err:  # a predicted class index the task does not have
            raise UserError(f"{files.predictions}: {err}; {REDO_EVALUATE}") from None
    return inputs


def _read_per_breed(path: Path, test: CachedSplit, nullable: tuple[str, ...], where: str) -> pd.DataFrame:
    """A model's per-breed table, checked to count ``test``'s images breed by breed. Raises UserError if it is
    missing, corrupt or about other images."""
    score = task_metric(test.classes.count)
    table = read_table(path, ("breed", "species"), ("images", score), nullable)
    if table.groupby("breed")["images"].sum().to_dict() != Counter(test.breeds):
        raise UserError(f"{path}: not about the {len(test.stems)} test images of {where}; {REDO_EVALUATE}")
    return table


if __name__ == "__main__":
    sys.exit(run_stage(main))
