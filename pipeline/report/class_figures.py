"""Figures of a multi-class task (C classes): confusion matrices, per-class IoU bars, and class masks drawn
on test photos in the task's palette (:attr:`pipeline.data.classes.Classes.palette`).

Masks hold class indices 0..C-1 and :data:`~pipeline.data.masks.IGNORE` (255) for ignored pixels. Drawn
with matplotlib's object API, as :mod:`pipeline.report.plots` is; save with its ``save_figure``.
"""

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from pipeline.data.cache import CachedSplit
from pipeline.data.masks import IGNORE, PackedMasks, target_mask
from pipeline.evaluate.confusion import class_scores, confusion_matrix
from pipeline.report.mask_figures import PANEL_INCHES, native_photo, worst_stems

# Paul Tol's "bad data" pale grey (https://personal.sron.nl/~pault/): the colour of ignored pixels in a
# palette mask. Apart from the default palette's black and its mid grey (128) for classes past the 7th.
IGNORE_COLOUR = (221, 221, 221)
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


def per_class_iou_bars(scores: dict[str, dict[str, float | None]], names: Sequence[str]) -> Figure:
    """Horizontal grouped bars of each model's test IoU per class, one group per class (the first class on
    top) and one bar per model, its value printed beside it. A None IoU (the class is in neither the
    truth nor the prediction, so its IoU is undefined) gets no bar but the word "absent".

    ``scores[model][name]`` is an IoU in [0, 1] or None for every class name in ``names``. Raises KeyError
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
    ax.set_xlabel("test IoU of the class")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title("Per-class IoU (test split)", pad=24)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=len(scores), frameon=False, fontsize=9)
    return fig


def palette_mask(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Class indices (H, W) (uint8) as uint8 (H, W, 3) RGB: index c gets ``palette[c]``, ignored pixels
    (:data:`~pipeline.data.masks.IGNORE`) :data:`IGNORE_COLOUR`. Raises ValueError on any other index
    outside 0..len(``palette``) - 1."""
    bad = (mask < 0) | ((mask >= len(palette)) & (mask != IGNORE))
    if bad.any():
        values = np.unique(mask[bad])
        raise ValueError(
            f"mask holds class indices {values[:5].tolist()} outside 0..{len(palette) - 1} (and not {IGNORE})"
        )
    # A lookup table over every uint8 value: one indexing pass, whatever the number of classes.
    lut = np.empty((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    lut[IGNORE] = IGNORE_COLOUR
    return lut[mask]


def palette_overlay(
    image: np.ndarray, mask: np.ndarray, palette: Sequence[Sequence[int]], alpha: float = 0.5
) -> np.ndarray:
    """Blend each class's ``palette`` colour into uint8 (H, W, 3) ``image`` with weight ``alpha`` where
    (H, W) ``mask`` holds that class; uint8 (H, W, 3).

    Class 0, the background, keeps the photo: it covers most of a picture, and its tint (black in the
    default palette) would darken the very photo the other classes are judged against. Ignored pixels
    keep the photo too. Raises ValueError on mismatched sizes or an index :func:`palette_mask` rejects.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    colours = palette_mask(mask, palette).astype(np.float32)
    out = image.astype(np.float32)
    where = (mask != 0) & (mask != IGNORE)
    # The same blend and rounding as pipeline.report.overlays.tint.
    out[where] = (1 - alpha) * out[where] + alpha * colours[where]
    return out.round().astype(np.uint8)


def class_legend(palette: Sequence[Sequence[int]], names: Sequence[str]) -> list[Patch]:
    """Legend entries of :func:`palette_overlay`'s pictures: one patch per class in its colour, the
    background (class 0) as an empty box, since it is drawn as the photo, as ignored pixels are."""
    handles = [Patch(facecolor="none", edgecolor="grey", label=f"{names[0]} / ignored: photo")]
    return handles + [Patch(color=np.asarray(c) / 255, label=n) for c, n in zip(palette[1:], names[1:], strict=True)]


Row = tuple[str, np.ndarray, np.ndarray, Mapping[str, np.ndarray]]


def class_overlays(
    rows: Sequence[Row],
    palette: Sequence[Sequence[int]],
    names: Sequence[str],
    title: str = "Test images: ground truth and predictions by class",
) -> Figure:
    """One row per test image: the photo, its ground truth, then each prediction, the masks drawn in the
    class palette (:func:`palette_overlay`); a legend of the class colours below, ``title`` above.

    Each row is ``(stem, photo, truth, predictions)``: photo uint8 (H, W, 3), truth uint8 (H, W) class
    indices and 255 for ignored pixels, predictions ``{panel title: uint8 (H, W)}`` (a model's name,
    perhaps with its score of the image), as many in every row. Sizes may differ between rows. Raises
    ValueError if ``rows`` is empty or a row has another number of predictions than the first.
    """
    if not rows:
        raise ValueError("no images to draw")
    if len({len(row[3]) for row in rows}) != 1:
        raise ValueError(f"rows differ in their number of predictions: {[len(row[3]) for row in rows]}")
    cols = 2 + len(rows[0][3])
    fig = Figure(figsize=(PANEL_INCHES * cols, PANEL_INCHES * len(rows) + 0.8), layout="constrained")
    axes = fig.subplots(len(rows), cols, squeeze=False)
    fig.get_layout_engine().set(h_pad=0.1)  # room between a tall photo and the next row's titles
    for ax_row, (stem, photo, truth, predictions) in zip(axes, rows, strict=True):
        panels = [(photo, f"{stem} ({truth.shape[1]}x{truth.shape[0]})")]
        panels.append((palette_overlay(photo, truth, palette), "ground truth"))
        panels += [(palette_overlay(photo, mask, palette), label) for label, mask in predictions.items()]
        for ax, (picture, title) in zip(ax_row, panels, strict=True):
            ax.imshow(picture)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    handles = class_legend(palette, names)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=9, frameon=False)
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


def class_iou(matrices: dict[str, np.ndarray], names: Sequence[str]) -> dict[str, dict[str, float | None]]:
    """``{model: {class name: IoU or None}}`` from each model's int64 (C, C) confusion matrix
    (:func:`pipeline.evaluate.confusion.class_scores`; None for a class in neither truth nor prediction),
    as :func:`per_class_iou_bars` takes them."""
    return {
        model: dict(zip(names, class_scores(torch.from_numpy(matrix))["iou"], strict=True))
        for model, matrix in matrices.items()
    }


def _labels(test: CachedSplit, i: int) -> tuple[np.ndarray, np.ndarray]:
    # Image i's truth at native size and its photo resized to that size.
    truth = target_mask(test.native, test.native_ignore, i)
    return native_photo(test.images[i], *truth.shape), truth


def class_overlay_grid(
    test: CachedSplit, predictions: dict[str, PackedMasks], per_image: dict[str, pd.DataFrame], rows: Sequence[int]
) -> Figure:
    """:func:`pipeline.report.mask_figures.overlay_grid` for a multi-class task: one row per test index in
    ``rows``, the photo, its truth and each model's prediction in the class palette, each prediction
    titled with the model's mIoU of the image (``per_image[model]``: columns stem, miou)."""
    miou = {name: table.set_index("stem")["miou"] for name, table in per_image.items()}
    drawn = []
    for i in rows:
        stem = test.stems[i]
        predicted = {f"{name}: mIoU {miou[name][stem]:.3f}": masks[i] for name, masks in predictions.items()}
        drawn.append((stem, *_labels(test, i), predicted))
    size = test.images.shape[1]
    title = f"Test images at native size by class (photo shown at {size} px, upsampled)"
    return class_overlays(drawn, test.classes.palette, test.classes.names, title)


def class_worst_grid(
    test: CachedSplit, predictions: dict[str, PackedMasks], per_image: dict[str, pd.DataFrame], k: int
) -> Figure:
    """:func:`pipeline.report.mask_figures.worst_grid` for a multi-class task: for each model in turn, its
    ``k`` test images of lowest mIoU (:func:`~pipeline.report.mask_figures.worst_stems`), one row each:
    the photo, its truth and that model's prediction in the class palette, titled with the mIoU."""
    index = {stem: i for i, stem in enumerate(test.stems)}
    drawn = []
    for name, table in per_image.items():
        miou = table.set_index("stem")["miou"]
        for stem in worst_stems(table, k, "miou"):
            i = index[stem]
            drawn.append((stem, *_labels(test, i), {f"{name}: mIoU {miou[stem]:.3f}": predictions[name][i]}))
    size = test.images.shape[1]
    title = f"Each model's {k} lowest-mIoU test images at native size (photo shown at {size} px, upsampled)"
    return class_overlays(drawn, test.classes.palette, test.classes.names, title)
