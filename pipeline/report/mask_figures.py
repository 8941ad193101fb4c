"""Figures of masks on test photos at native size: chosen images, and each model's worst images.

Predictions are coloured by outcome against the ground truth (:func:`pipeline.report.overlays.error_overlay`).
The cache keeps each photo only at ``image_size``, so the photo under the masks is that image resized
back to the native size: blurrier than the original, which the figures say.
"""

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from PIL import Image

from pipeline.data.cache import CachedSplit
from pipeline.data.masks import PackedMasks, target_mask
from pipeline.report.overlays import ERROR_COLOURS, PET, error_overlay, tint

PANEL_INCHES = 2.6  # width and height of one picture's box
WORST_COLUMNS = 4  # worst.png wraps each model's images into rows of this many


def native_photo(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Cache image uint8 (S, S, 3) resized bilinearly (PIL) to uint8 (height, width, 3)."""
    return np.asarray(Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR))


def worst_stems(per_image: pd.DataFrame, k: int, score: str = "dice") -> list[str]:
    """The ``k`` stems of a per-image table (columns stem and ``score``) with the lowest score, lowest
    first, ties by stem; all of them if there are fewer. Stems without a score (NaN) come last."""
    return per_image.sort_values([score, "stem"], kind="stable")["stem"].head(k).tolist()


def _legend(fig: Figure, extra: dict[str, np.ndarray] | None = None) -> None:
    colours = {**(extra or {}), **ERROR_COLOURS}
    handles = [Patch(color=colour / 255, label=label) for label, colour in colours.items()]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=9, frameon=False)


def _show(ax: Axes, picture: np.ndarray, title: str) -> None:
    ax.imshow(picture)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def overlay_grid(
    test: CachedSplit, predictions: dict[str, PackedMasks], per_image: dict[str, pd.DataFrame], rows: Sequence[int]
) -> Figure:
    """One row per test index in ``rows``: the photo, its ground truth tinted, then each model's
    prediction coloured by outcome, titled with that model's native Dice of the image. Ignored
    pixels (``test.native_ignore``) are drawn untinted in every panel.

    ``predictions[model][i]`` is uint8 (h, w), the size of ``test.native[i]``; ``per_image[model]``
    has columns stem, dice. Raises KeyError if a chosen stem has no Dice.
    """
    dice = {name: table.set_index("stem")["dice"] for name, table in per_image.items()}
    cols = 2 + len(predictions)
    fig = Figure(figsize=(PANEL_INCHES * cols, PANEL_INCHES * len(rows) + 0.8), layout="constrained")
    axes = fig.subplots(len(rows), cols, squeeze=False)
    fig.get_layout_engine().set(h_pad=0.1)  # room between a tall photo and the next row's titles
    for ax_row, i in zip(axes, rows, strict=True):
        truth, stem = target_mask(test.native, test.native_ignore, i), test.stems[i]
        photo = native_photo(test.images[i], *truth.shape)
        panels = [(photo, f"{stem} ({truth.shape[1]}x{truth.shape[0]})"), (tint(photo, truth == 1), "ground truth")]
        for name, masks in predictions.items():
            panels.append((error_overlay(photo, masks[i], truth), f"{name}: Dice {dice[name][stem]:.3f}"))
        for ax, (picture, title) in zip(ax_row, panels, strict=True):
            _show(ax, picture, title)
    size = test.images.shape[1]
    fig.suptitle(f"Test images at native size (photo shown at {size} px, upsampled)", fontsize=10)
    _legend(fig, {"ground truth": PET})
    return fig


def worst_grid(
    test: CachedSplit, predictions: dict[str, PackedMasks], per_image: dict[str, pd.DataFrame], k: int
) -> Figure:
    """For each model, its ``k`` test images with the lowest native Dice (:func:`worst_stems`), each
    prediction coloured by outcome and titled with stem and Dice; one block of rows per model.

    ``per_image[model]`` has columns stem, dice over the stems of ``test``; ``predictions`` as in
    :func:`overlay_grid`.
    """
    index = {stem: i for i, stem in enumerate(test.stems)}
    worst = {name: worst_stems(table, k) for name, table in per_image.items()}
    cols = min(WORST_COLUMNS, max(len(s) for s in worst.values()))
    block = math.ceil(max(len(s) for s in worst.values()) / cols)
    fig = Figure(figsize=(PANEL_INCHES * cols, (PANEL_INCHES * block + 0.4) * len(worst) + 0.8), layout="constrained")
    for subfig, (name, stems) in zip(np.atleast_1d(fig.subfigures(len(worst), 1)), worst.items(), strict=True):
        subfig.suptitle(f"{name}: {len(stems)} lowest-Dice test images", fontsize=11, fontweight="bold")
        dice = per_image[name].set_index("stem")["dice"]
        axes = subfig.subplots(block, cols, squeeze=False).ravel()
        for ax in axes[len(stems) :]:
            ax.axis("off")
        for ax, stem in zip(axes, stems, strict=False):
            truth = target_mask(test.native, test.native_ignore, index[stem])
            photo = native_photo(test.images[index[stem]], *truth.shape)
            _show(ax, error_overlay(photo, predictions[name][index[stem]], truth), f"{stem}: Dice {dice[stem]:.3f}")
    fig.suptitle(f"Worst test images at native size (photo shown at {test.images.shape[1]} px, upsampled)", fontsize=10)
    _legend(fig)
    return fig
