"""Stage `plot`: learning curves, prediction overlays and test Dice bars for all models."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.cli import run_stage
from pipeline.data import load_cache
from pipeline.errors import UserError
from pipeline.params import get_int, load_params, section
from pipeline.plots import (
    dice_bars,
    learning_curves,
    load_predictions,
    prediction_grid,
    read_curves,
    read_metrics,
    save_figure,
)


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read plot.*, write the three PNG figures. Raises UserError for missing inputs."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--models", nargs="+", required=True, help="model names, in display order")
    parser.add_argument("--live", nargs="+", required=True, help="dvclive folder per model")
    parser.add_argument("--metrics", nargs="+", required=True, help="metrics .json per model")
    parser.add_argument("--predictions", nargs="+", required=True, help="predictions .npz per model")
    parser.add_argument("--test", required=True, help="test split cache (.npz)")
    parser.add_argument("--curves-png", required=True)
    parser.add_argument("--predictions-png", required=True)
    parser.add_argument("--dice-png", required=True)
    args = parser.parse_args(argv)
    if not len(args.models) == len(args.live) == len(args.metrics) == len(args.predictions):
        raise UserError("plot: give one --live, --metrics and --predictions path per --models name")
    params = section(load_params(args.params), "plot")
    num_images = get_int(params, "num_images", "plot.", minimum=1)
    seed = get_int(params, "seed", "plot.", minimum=0)

    # Read and check every input before writing any figure.
    names = args.models
    curves = {m: read_curves(Path(p)) for m, p in zip(names, args.live, strict=True)}
    metrics = {m: read_metrics(Path(p)) for m, p in zip(names, args.metrics, strict=True)}
    test = load_cache(Path(args.test))
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(test.stems), min(num_images, len(test.stems)), replace=False))
    predictions = {}
    for model, path in zip(names, args.predictions, strict=True):
        masks, stems = load_predictions(Path(path))
        if stems != test.stems:
            raise UserError(f"{path}: predictions are for other test images than {args.test}; run dvc repro")
        predictions[model] = masks[chosen]
    save_figure(learning_curves(curves), args.curves_png)
    save_figure(dice_bars(metrics), args.dice_png)
    grid = prediction_grid(test.images[chosen], test.masks[chosen], predictions, [test.stems[i] for i in chosen])
    save_figure(grid, args.predictions_png)
    print(f"plot: wrote {args.curves_png}, {args.predictions_png}, {args.dice_png}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
