"""Figures of masks on test photos at native size, for any task: chosen images, and each model's worst.

Masks are drawn in the task's palette (:attr:`pipeline.data.classes.Classes.palette`), a prediction with its
wrong pixels marked (:func:`pipeline.report.overlays.outcome_overlay`), each titled with its model's score of
the image (Dice for a binary task, mIoU for more classes). The cache keeps each photo only at
``image_size``, so the photo under the masks is that image resized back to the native size: blurrier than
the original, which the figures say.
"""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from PIL import Image

from pipeline.core.constants import SCORE_LABELS
from pipeline.data.cache import CachedSplit
from pipeline.data.geometry import describe
from pipeline.data.masks import PackedMasks, target_mask
from pipeline.report.overlays import class_legend, outcome_overlay, palette_overlay

PANEL_INCHES = 2.6  # width and height of one picture's box
WORST_COLUMNS = 4  # worst.png wraps each model's images into rows of this many


def native_photo(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Cache image uint8 (S, S, 3) resized bilinearly (PIL) to uint8 (height, width, 3)."""
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def worst_stems(per_image: pd.DataFrame, k: int, score: str) -> list[str]:
    """The ``k`` stems of a per-image table (columns stem and ``score``) with the lowest score, lowest
    first, ties by stem; all of them if there are fewer. Stems without a score (NaN) come last."""
    return per_image.sort_values([score, "stem"], kind="stable")["stem"].head(k).tolist()


def _legend(fig: Figure, test: CachedSplit) -> None:
    handles = class_legend(test.classes, wrong=True)
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), fontsize=9, frameon=False)


def _key(test: CachedSplit) -> str:
    """What the colours and the photo of a mask figure are: its titles' last line."""
    return (
        f"Colours: classes as in the legend, wrong pixels purple; photo: the model input ({describe(test.resize)}), "
        "upsampled"
    )


def _show(ax: Axes, picture: np.ndarray, title: str) -> None:
    ax.imshow(picture)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def _scene(test: CachedSplit, i: int) -> tuple[np.ndarray, np.ndarray]:
    """Image ``i``'s photo resized to its truth's size, and the truth (class indices, 255 ignored)."""
    truth = target_mask(test.native, test.native_ignore, i)
    return native_photo(test.photo(i), *truth.shape), truth


def overlay_grid(
    test: CachedSplit,
    predictions: dict[str, PackedMasks],
    per_image: dict[str, pd.DataFrame],
    rows: Sequence[int],
    score: str,
) -> Figure:
    """One row per test index in ``rows``: the photo, its ground truth, then each model's prediction
    (wrong pixels marked), titled with that model's ``score`` of the image (a column of
    ``per_image[model]``, beside stem). ``predictions[model][i]`` is a label map uint8 (h, w), the size of
    ``test.native[i]``. Raises KeyError if a chosen stem has no score."""
    values = {name: table.set_index("stem")[score] for name, table in per_image.items()}
    label = SCORE_LABELS[score]
    cols = 2 + len(predictions)
    fig = Figure(figsize=(PANEL_INCHES * cols, PANEL_INCHES * len(rows) + 0.8), layout="constrained")
    axes = fig.subplots(len(rows), cols, squeeze=False)
    fig.get_layout_engine().set(h_pad=0.1)  # room between a tall photo and the next row's titles
    for ax_row, i in zip(axes, rows, strict=True):
        (photo, truth), stem = _scene(test, i), test.stems[i]
        panels = [(photo, f"{stem} ({truth.shape[1]}x{truth.shape[0]})")]
        panels.append((palette_overlay(photo, truth, test.classes), "ground truth"))
        for name, masks in predictions.items():
            title = f"{name}: {label} {values[name][stem]:.3f}"
            panels.append((outcome_overlay(photo, masks[i], truth, test.classes), title))
        for ax, (picture, title) in zip(ax_row, panels, strict=True):
            _show(ax, picture, title)
    fig.suptitle(
        f"{len(rows)} of {len(test.stems)} test images at their own size: the photo, its ground truth, then each "
        f"model's prediction, titled with that model's {label} of the image\n{_key(test)}",
        fontsize=10,
    )
    _legend(fig, test)
    return fig


def worst_grid(
    test: CachedSplit, predictions: dict[str, PackedMasks], per_image: dict[str, pd.DataFrame], k: int, score: str
) -> Figure:
    """For each model, its ``k`` test images of the lowest ``score`` (:func:`worst_stems`), each prediction
    drawn as in :func:`overlay_grid` and titled with stem and score; one block of rows per model.
    ``per_image[model]`` has columns stem and ``score`` over the stems of ``test``."""
    index = {stem: i for i, stem in enumerate(test.stems)}
    worst = {name: worst_stems(table, k, score) for name, table in per_image.items()}
    cols = min(WORST_COLUMNS, max(len(s) for s in worst.values()))
    block = math.ceil(max(len(s) for s in worst.values()) / cols)
    label = SCORE_LABELS[score]
    fig = Figure(figsize=(PANEL_INCHES * cols, (PANEL_INCHES * block + 0.4) * len(worst) + 0.8), layout="constrained")
    for subfig, (name, stems) in zip(np.atleast_1d(fig.subfigures(len(worst), 1)), worst.items(), strict=True):
        subfig.suptitle(f"{name}: {len(stems)} lowest-{label} test images", fontsize=11, fontweight="bold")
        values = per_image[name].set_index("stem")[score]
        axes = subfig.subplots(block, cols, squeeze=False).ravel()
        for ax in axes[len(stems) :]:
            ax.axis("off")
        for ax, stem in zip(axes, stems, strict=False):
            photo, truth = _scene(test, index[stem])
            picture = outcome_overlay(photo, predictions[name][index[stem]], truth, test.classes)
            _show(ax, picture, f"{stem}: {label} {values[stem]:.3f}")
    fig.suptitle(f"Each model's lowest-{label} test images at their own size\n{_key(test)}", fontsize=10)
    _legend(fig, test)
    return fig
