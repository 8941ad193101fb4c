"""Per-class figures of any task (a binary task's classes are background and pet): the test confusion
matrices and the per-class IoU bars, from C×C confusion matrices (:mod:`pipeline.evaluate.confusion`).

Drawn with matplotlib's object API, as :mod:`pipeline.report.plots` is; save with its ``save_figure``.
"""

from collections.abc import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure

from pipeline.data.cache import CachedSplit
from pipeline.data.masks import PackedMasks, target_mask
from pipeline.evaluate.confusion import class_scores, confusion_matrix

# One colour per model in the IoU bars: Paul Tol's "bright" scheme, told apart by colour-blind readers,
# and not the class palette, so a bar's colour is never read as its class.
MODEL_COLOURS = ("#4477AA", "#EE6677", "#228833", "#CCBB44", "#66CCEE", "#AA3377", "#BBBBBB")
# Viridis is perceptually uniform and reads the same to colour-blind readers and in greyscale.
CONFUSION_CMAP = "viridis"


def row_normalise(matrix: np.ndarray) -> np.ndarray:
    """Each row of an integer (C, C) confusion matrix divided by its sum: float (C, C), NaN in a row with
    no pixels (a class absent from the truth), computed without a divide-by-zero warning."""
    sums = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, sums, out=np.full(matrix.shape, np.nan), where=sums > 0)


def _text_colour(rgba: Sequence[float]) -> str:
    # Rec. 709 luma of the cell's colour: black text on light cells, white on dark ones.
    luma = 0.2126 * rgba[0] + 0.7152 * rgba[1] + 0.0722 * rgba[2]
    return "black" if luma > 0.5 else "white"


def confusion_figure(matrices: dict[str, np.ndarray], names: Sequence[str]) -> Figure:
    """One panel per model of its test confusion matrix, row-normalised (:func:`row_normalise`), each cell
    printed as a percentage of its true class's pixels; a row with no pixels is left blank but for the
    words "no true pixels". One colour bar 0..1 for all panels.

    ``matrices[model]`` is int64 (C, C) pixel counts, rows the true class and columns the predicted one,
    C = len(``names``). Raises ValueError on a matrix of another shape.
    """
    count = len(names)
    for name, matrix in matrices.items():
        if matrix.shape != (count, count):
            raise ValueError(f"{name}: confusion matrix of shape {matrix.shape}, expected ({count}, {count})")
    side = 1.5 + 0.55 * count
    fig = Figure(figsize=(side * len(matrices) + 1.2, side + 0.6), layout="constrained")
    axes = fig.subplots(1, len(matrices), squeeze=False)[0]
    cmap = colormaps[CONFUSION_CMAP]
    fontsize = 8 if count <= 8 else 6
    for ax, (name, matrix) in zip(axes, matrices.items(), strict=True):
        fraction = row_normalise(matrix)
        # Masked cells (rows with no pixels) are not coloured: the axes' white shows through.
        image = ax.imshow(np.ma.masked_invalid(fraction), cmap=cmap, vmin=0, vmax=1)
        for (row, col), value in np.ndenumerate(fraction):
            if not np.isnan(value):
                colour = _text_colour(cmap(value))
                ax.text(col, row, f"{100 * value:.1f}%", ha="center", va="center", fontsize=fontsize, color=colour)
        for row in np.flatnonzero(np.isnan(fraction).all(axis=1)):
            centre = (count - 1) / 2
            ax.text(centre, row, "no true pixels", ha="center", va="center", fontsize=fontsize, color="dimgrey")
        ax.set_xticks(range(count), names, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(count), names)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(name)
    fig.colorbar(image, ax=list(axes), shrink=0.8, label="fraction of the true class's pixels")
    fig.suptitle("Confusion matrix (row-normalised, test split)")
    return fig


def per_class_bars(scores: dict[str, dict[str, float | None]], names: Sequence[str], measure: str = "IoU") -> Figure:
    """Horizontal grouped bars of each model's test ``measure`` ("IoU" or "recall") per class, one group per
    class (the first class on top) and one bar per model, its value printed beside it. A None value (IoU: the
    class is in neither the truth nor the prediction; recall: not in the truth, so it is undefined) gets no
    bar but the word "absent".

    ``scores[model][name]`` is a value in [0, 1] or None for every class name in ``names``. Raises KeyError
    if a model's scores lack a class.
    """
    y = np.arange(len(names))[::-1]  # the first class at the top
    height = 0.8 / len(scores)
    fig = Figure(figsize=(7, 1.2 + 0.25 * len(names) * len(scores)), layout="constrained")
    ax = fig.subplots()
    for i, (model, iou) in enumerate(scores.items()):
        offsets = y + (len(scores) / 2 - 0.5 - i) * height  # the first model on top within a group
        values = [iou[name] for name in names]
        present = [j for j, value in enumerate(values) if value is not None]
        colour = MODEL_COLOURS[i % len(MODEL_COLOURS)]
        drawn = ax.barh(offsets[present], [values[j] for j in present], height, color=colour, label=model)
        ax.bar_label(drawn, fmt="%.3f", fontsize=7, padding=2)
        for j, value in enumerate(values):
            if value is None:
                ax.text(0.01, offsets[j], "absent", va="center", fontsize=7, color="dimgrey", style="italic")
    ax.set_yticks(y, list(names))
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlim(0, 1.1)  # room for the value labels of bars near 1
    ax.set_xlabel(f"test {measure} of the class")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"Per-class {measure} (test split)", pad=24)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(scores), frameon=False, fontsize=9)
    return fig


def split_confusion(test: CachedSplit, predictions: dict[str, PackedMasks]) -> dict[str, np.ndarray]:
    """Each model's confusion matrix over a split at native size: int64 (C, C), rows the true class and
    columns the predicted one (:func:`pipeline.evaluate.confusion.confusion_matrix`), C = ``test.classes.count``,
    summed over the images; ignored pixels are counted nowhere.

    ``predictions[model][i]`` is image i's predicted class indices (a binary task's {0, 1}) at the size
    of ``test.native[i]``. Raises ValueError on an index outside 0..C-1.
    """
    count = test.classes.count
    matrices = {}
    for model, masks in predictions.items():
        total = torch.zeros(count, count, dtype=torch.int64)
        for i in range(len(test.stems)):
            truth = torch.from_numpy(target_mask(test.native, test.native_ignore, i))[None]
            total += confusion_matrix(torch.from_numpy(masks[i])[None], truth, count)[0]
        matrices[model] = total.numpy()
    return matrices


def per_class(
    matrices: dict[str, np.ndarray], names: Sequence[str], key: str = "iou"
) -> dict[str, dict[str, float | None]]:
    """``{model: {class name: value or None}}``, the ``key`` ("iou" or "recall") of
    :func:`pipeline.evaluate.confusion.class_scores` from each model's int64 (C, C) confusion matrix (None
    where undefined), as :func:`per_class_bars` takes them."""
    return {
        model: dict(zip(names, class_scores(torch.from_numpy(matrix))[key], strict=True))
        for model, matrix in matrices.items()
    }
