"""Figures for review: learning curves, prediction overlays, test Dice per model (matplotlib)."""

import json
import zipfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from pipeline.errors import UserError  # noqa: E402
from pipeline.io import atomic_path  # noqa: E402
from pipeline.metrics import confusion_counts, dice_from_counts  # noqa: E402

# dvclive writes one TSV per metric under <live>/plots/metrics/, with columns step (0-based epoch) and <name>.
CURVES = {"train/loss": "train loss", "valid/loss": "valid loss", "valid/dice": "valid Dice"}
OVERLAY = np.array([255, 64, 0], np.float32)  # RGB of the mask overlay


def read_curves(live_dir: Path) -> pd.DataFrame:
    """Per-epoch metrics logged by dvclive: a DataFrame indexed by epoch (1-based) with CURVES columns.

    Raises UserError if a TSV is missing.
    """
    columns = {}
    for metric in CURVES:
        path = Path(live_dir) / "plots" / "metrics" / f"{metric}.tsv"
        try:
            table = pd.read_csv(path, sep="\t")
            columns[metric] = table.set_index(table["step"] + 1)[Path(metric).name]
        except FileNotFoundError:
            raise UserError(f"{path}: not found; rerun the training stage") from None
        except (KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise UserError(f"{path}: not a dvclive metric file ({err!r}); rerun the training stage") from None
    return pd.DataFrame(columns).rename_axis("epoch")


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Save ``fig`` as PNG atomically and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)


def learning_curves(curves: dict[str, pd.DataFrame]) -> plt.Figure:
    """One column per model: losses on top, valid Dice below, against epoch."""
    fig, axes = plt.subplots(2, len(curves), figsize=(5 * len(curves), 6), squeeze=False, sharex="col")
    for col, (name, table) in enumerate(curves.items()):
        top, bottom = axes[0, col], axes[1, col]
        for metric in ("train/loss", "valid/loss"):
            top.plot(table.index, table[metric], marker=".", label=CURVES[metric])
        top.set_title(name)
        top.set_ylabel("loss")
        top.legend()
        bottom.plot(table.index, table["valid/dice"], marker=".", color="tab:green")
        best = table["valid/dice"].idxmax()
        bottom.axvline(best, color="grey", linestyle=":", label=f"best {table['valid/dice'].max():.3f} @ {best}")
        bottom.set_xlabel("epoch")
        bottom.set_ylabel("valid Dice")
        bottom.legend()
    fig.tight_layout()
    return fig


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend ``OVERLAY`` into uint8 (H, W, 3) ``image`` where uint8 (H, W) ``mask`` is 1."""
    out = image.astype(np.float32)
    out[mask.astype(bool)] = (1 - alpha) * out[mask.astype(bool)] + alpha * OVERLAY
    return out.astype(np.uint8)


def prediction_grid(
    images: np.ndarray, truth: np.ndarray, predictions: dict[str, np.ndarray], stems: list[str]
) -> plt.Figure:
    """Rows of test images: the photo, ground truth overlay, then each model's prediction overlay.

    ``images`` uint8 (K, S, S, 3); ``truth`` and each prediction uint8 (K, S, S) in {0, 1}.
    Prediction panels are titled with that image's Dice.
    """
    cols = 2 + len(predictions)
    fig, axes = plt.subplots(len(images), cols, figsize=(2.4 * cols, 2.4 * len(images)), squeeze=False)
    for row, (image, gt, stem) in enumerate(zip(images, truth, stems, strict=True)):
        panels = [(image, stem), (overlay(image, gt), "ground truth")]
        for name, pred in predictions.items():
            tp, fp, fn, _ = confusion_counts(torch.from_numpy(pred[row][None]), torch.from_numpy(gt[None]))[0]
            panels.append((overlay(image, pred[row]), f"{name} Dice {float(dice_from_counts(tp, fp, fn)):.3f}"))
        for ax, (picture, title) in zip(axes[row], panels, strict=True):
            ax.imshow(picture)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    return fig


def dice_bars(metrics: dict[str, dict]) -> plt.Figure:
    """Grouped bars of test Dice, per-image Dice and IoU for each model, values printed on the bars."""
    keys = ("dice", "dice_per_image", "iou")
    fig, ax = plt.subplots(figsize=(2 + 2 * len(metrics), 3.5))
    width = 0.8 / len(keys)
    x = np.arange(len(metrics))
    for i, key in enumerate(keys):
        values = [m[key] for m in metrics.values()]
        bars = ax.bar(x + (i - 1) * width, values, width, label=key)
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(x, list(metrics))
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test score")
    n = next(iter(metrics.values()))["num_images"]
    ax.set_title(f"Test set ({n} images)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def read_metrics(path: Path) -> dict:
    """The metrics dict an evaluate stage wrote. Raises UserError if missing, not JSON or lacking a key."""
    try:
        metrics = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: metrics not found; run the evaluate stages (dvc repro)") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON ({err}); run dvc repro -f for its evaluate stage") from None
    missing = [k for k in ("dice", "dice_per_image", "iou", "num_images") if k not in metrics]
    if missing:
        raise UserError(f"{path}: lacks {', '.join(missing)}; run dvc repro -f for its evaluate stage")
    return metrics


def load_predictions(path: Path) -> tuple[np.ndarray, list[str]]:
    """Masks uint8 (N, S, S) and stems from an evaluate stage's bit-packed .npz."""
    try:
        with np.load(path) as data:
            shape = tuple(data["shape"])
            masks = np.unpackbits(data["masks"], axis=-1, count=shape[-1])
            return masks.reshape(shape), data["stems"].tolist()
    except FileNotFoundError:
        raise UserError(f"{path}: predictions not found; run the evaluate stages (dvc repro)") from None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a predictions file ({err!r}); run dvc repro -f for its evaluate stage") from None
