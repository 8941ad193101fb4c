"""Figures for review: learning curves, the per-image score distribution, per-breed and test score bars.

Every figure takes the task's score (``score``: "dice" for a binary task, "miou" for more classes: the
column of the per-image and per-breed tables, the valid curve), so one set of figures serves every task.

Drawn with matplotlib's object API (:class:`~matplotlib.figure.Figure`), never pyplot's global state,
so nothing needs a display or a backend switch. The mask pictures are in :mod:`pipeline.report.mask_figures`.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from pipeline.core.constants import SCORE_LABELS, headline_keys
from pipeline.core.io import atomic_path
from pipeline.report.inputs import CURVES

# Tick label colours of per_breed.png, so cat and dog breeds read apart: dark enough for text, unlike
# the bars' blue and orange, and apart for colour-blind readers (Paul Tol's "bright" purple and green).
SPECIES_COLOURS = {"cat": "#AA3377", "dog": "#228833"}


def save_figure(fig: Figure, path: Path) -> None:
    """Save ``fig`` as PNG (100 dpi, cropped to its content) atomically."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")


def learning_curves(curves: dict[str, pd.DataFrame], score: str = "dice") -> Figure:
    """One column per model: losses on top, the valid ``score`` (column ``valid/<score>``) below, against epoch."""
    name = SCORE_LABELS[score]
    fig = Figure(figsize=(5 * len(curves), 6))
    axes = fig.subplots(2, len(curves), squeeze=False, sharex="col")
    for col, (model, table) in enumerate(curves.items()):
        top, bottom = axes[0, col], axes[1, col]
        for metric in ("train/loss", "valid/loss"):
            top.plot(table.index, table[metric], marker=".", label=CURVES[metric])
        top.set_title(model)
        top.set_ylabel("loss")
        top.legend()
        valid = table[f"valid/{score}"]
        bottom.plot(table.index, valid, marker=".", color="tab:green")
        best = valid.idxmax()
        bottom.axvline(best, color="grey", linestyle=":", label=f"best {valid.max():.3f} @ {best}")
        bottom.set_xlabel("epoch")
        bottom.set_ylabel(f"valid {name}")
        bottom.legend()
    fig.tight_layout()
    return fig


def ecdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Empirical CDF of float (N,) ``values``, N >= 1: the distinct values sorted, float (K,), and the
    fraction of ``values`` at most each of them, float (K,)."""
    x, counts = np.unique(values, return_counts=True)
    return x, np.cumsum(counts) / len(values)


def score_distribution(per_image: dict[str, pd.DataFrame], score: str = "dice") -> Figure:
    """ECDF of each model's per-image native ``score`` (that column of its per-image table), shared axes.
    Images without a score (NaN: a multi-class image whose every pixel is ignored) are left out."""
    label = SCORE_LABELS[score]
    fig = Figure(figsize=(6.5, 4.5))
    ax = fig.subplots()
    for name, table in per_image.items():
        values = table[score].dropna().to_numpy()
        x, y = ecdf(values)
        # Start at (0, 0) and end at a score of 1 so every curve spans the whole axis.
        ax.step(np.r_[0.0, x, 1.0], np.r_[0.0, y, 1.0], where="post", label=f"{name} (median {np.median(values):.3f})")
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"{label} of an image (native resolution)")
    ax.set_ylabel(f"fraction of test images with {label} ≤ x")
    ax.set_title(f"Per-image test {label} ({len(next(iter(per_image.values())))} images)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.tight_layout()
    return fig


def breed_order(per_breed: dict[str, pd.DataFrame], score: str = "dice") -> list[str]:
    """Breeds by the mean over models of their ``score`` (worst first, ties by name).

    Each table has one row per breed with columns breed and ``score``; a breed missing from a model's
    table is averaged over the others.
    """
    mean = pd.concat([t.set_index("breed")[score] for t in per_breed.values()], axis=1).mean(axis=1)
    return sorted(mean.index, key=lambda breed: (mean[breed], breed))


def per_breed_bars(per_breed: dict[str, pd.DataFrame], score: str = "dice") -> Figure:
    """Horizontal grouped bars of each model's per-breed ``score`` (worst breed on top), labelled with the
    breed's image count; tick labels coloured by species.

    Each table has columns breed, species, images and ``score``, one row per breed (the same breeds).
    """
    score_name = SCORE_LABELS[score]
    order = breed_order(per_breed, score)
    first = next(iter(per_breed.values())).set_index("breed")
    y = np.arange(len(order))[::-1]  # the first (worst) breed at the top
    height = 0.8 / len(per_breed)
    fig = Figure(figsize=(8, 1.5 + 0.22 * len(order) * len(per_breed)), layout="constrained")
    ax = fig.subplots()
    for i, (name, table) in enumerate(per_breed.items()):
        values = table.set_index("breed")[score].reindex(order)
        ax.barh(y + (len(per_breed) / 2 - 0.5 - i) * height, values, height, label=name)
    ax.set_yticks(y, [f"{b} (n={int(first.loc[b, 'images'])})" for b in order], fontsize=8)
    for label, breed in zip(ax.get_yticklabels(), order, strict=True):
        label.set_color(SPECIES_COLOURS.get(first.loc[breed, "species"], "black"))
    ax.set_ylim(-0.6, len(order) - 0.4)
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"test {score_name} within the breed (dataset-level, native resolution)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(f"Test {score_name} per breed, worst on top", pad=24)
    handles, _ = ax.get_legend_handles_labels()
    # Species entries are their label text in the tick label colour, with no mark.
    handles += [Line2D([], [], linestyle="none", label=f"{s} breed names") for s in SPECIES_COLOURS]
    colours = ["black"] * len(per_breed) + list(SPECIES_COLOURS.values())
    ax.legend(
        handles=handles,
        labelcolor=colours,
        loc="lower center",
        bbox_to_anchor=(0.5, 1.0),
        ncol=len(handles),
        frameon=False,
        fontsize=9,
    )
    return fig


def _bar_label(key: str, image_size: int, binary: bool) -> str:
    base = key.removesuffix("_at_image_size")
    names = {"dice": "Dice" if binary else "mean class Dice", "iou": "IoU", "miou": "mIoU"}
    names |= {"dice_per_image": "Dice per image", "pixel_accuracy": "pixel accuracy"}
    return names[base] + (f" at {image_size} px" if base != key else "")


def score_bars(metrics: dict[str, dict], num_classes: int) -> Figure:
    """Grouped bars per model of its headline test scores (:func:`pipeline.core.constants.headline_keys` but
    the training's best valid score and epoch), values printed on the bars: the task's score, and the same
    at the cache's image size (what resizing the masks to each photo costs). The title gives the number of
    test images and each model's threshold (a binary task's) and TTA. Each dict is what
    :func:`pipeline.report.inputs.read_metrics` returns; image_size and images are taken from the first."""
    first = next(iter(metrics.values()))
    keys = [k for k in headline_keys(num_classes) if not k.startswith("best_")]
    fig = Figure(figsize=(max(6.0, 2 + 2.4 * len(metrics)), 4))  # wide enough for the legend
    ax = fig.subplots()
    width = 0.8 / len(keys)
    x = np.arange(len(metrics))
    for i, key in enumerate(keys):
        label = _bar_label(key, first["image_size"], num_classes == 2)
        drawn = ax.bar(x + (i - (len(keys) - 1) / 2) * width, [m[key] for m in metrics.values()], width, label=label)
        ax.bar_label(drawn, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(x, list(metrics))
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("test score")
    settings = {name: _settings(m) for name, m in metrics.items()}
    said = (
        [next(iter(settings.values()))]
        if len(set(settings.values())) == 1
        else [f"{n}: {s}" for n, s in settings.items()]
    )
    resolution = f"at each photo's own size but the {first['image_size']} px bar"
    ax.set_title(f"Test set ({first['images']} images), {resolution}\n" + "; ".join(said), fontsize=10)
    ax.legend(loc="upper center", ncol=len(keys), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _settings(metrics: dict) -> str:
    threshold = metrics.get("threshold")
    return ("" if threshold is None else f"threshold {threshold:g}, ") + f"TTA {metrics['tta']}"
