"""Readers of what the training and evaluate stages wrote, checked before the plot stage draws anything.

Each raises a one-line UserError naming the file and the stage to rerun, so a bad input leaves no figure.
"""

import json
import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.constants import headline_keys
from pipeline.core.errors import UserError
from pipeline.data.masks import LABELS, PackedMasks

# dvclive writes one TSV per metric under <live>/plots/metrics/, with columns step (0-based epoch) and <name>.
CURVES = {"train/loss": "train loss", "valid/loss": "valid loss", "valid/dice": "valid Dice"}
# Numbers the figures need from metrics/evaluation/<model>/scores.json besides its headline (and a binary task's
# threshold: a multi-class task has none, a pixel taking its highest logit's class).
DETAIL_KEYS = ("images", "image_size")
REDO_EVALUATE = "run dvc repro -f for its evaluate stage"


def read_curves(live_dir: Path, score: str = "dice") -> pd.DataFrame:
    """Per-epoch metrics logged by dvclive: a DataFrame indexed by epoch (1-based) with a column per key of
    :data:`CURVES` and ``valid/<score>``, the task's score (a multi-class training logs its valid mIoU).

    Raises UserError if a TSV is missing or malformed.
    """
    columns = {}
    for metric in {**CURVES, f"valid/{score}": None}:
        path = Path(live_dir) / "plots" / "metrics" / f"{metric}.tsv"
        try:
            table = pd.read_csv(path, sep="\t")
            columns[metric] = table.set_index(table["step"] + 1)[Path(metric).name]
        except FileNotFoundError:
            raise UserError(f"{path}: not found; rerun the training stage") from None
        except (KeyError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
            raise UserError(f"{path}: not a dvclive metric file ({err!r}); rerun the training stage") from None
    return pd.DataFrame(columns).rename_axis("epoch")


def read_metrics(path: Path, num_classes: int = 2) -> dict:
    """What an evaluate stage measured about a model (``metrics/evaluation/<model>/scores.json``), with a number
    for every key of the task's :func:`~pipeline.core.constants.headline_keys` and of DETAIL_KEYS (and
    ``threshold`` for two classes), and a ``tta``.

    Raises UserError if the file is missing, not JSON, or lacks one of those keys.
    """
    try:
        metrics = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run the evaluate stages (dvc repro)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not valid JSON ({err}); {REDO_EVALUATE}") from None
    if not isinstance(metrics, dict):
        raise UserError(f"{path}: not a JSON object; {REDO_EVALUATE}")
    keys = (*headline_keys(num_classes), *DETAIL_KEYS, *(("threshold",) if num_classes == 2 else ()))
    missing = [key for key in keys if not _is_number(metrics.get(key))]
    missing += [] if isinstance(metrics.get("tta"), str) else ["tta"]
    if missing:
        raise UserError(f"{path}: missing or malformed {', '.join(missing)}; {REDO_EVALUATE}")
    return metrics


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def read_table(
    path: Path, text: tuple[str, ...], numbers: tuple[str, ...], nullable: tuple[str, ...] = ()
) -> pd.DataFrame:
    """A CSV an evaluate stage wrote, with ``text`` columns as str and ``numbers`` columns as finite floats,
    but those also in ``nullable``, which may be empty or NaN (read as NaN): a per-image mIoU is NaN for an
    image whose every pixel is ignored.

    Raises UserError if the file is missing, not a CSV, lacks a column or has a non-number in ``numbers``.
    """
    try:
        table = pd.read_csv(path, dtype={c: str for c in text}, keep_default_na=False)
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run the evaluate stages (dvc repro)") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: not a CSV ({str(err).strip()!r}); {REDO_EVALUATE}") from None
    missing = [c for c in (*text, *numbers) if c not in table.columns]
    if missing:
        raise UserError(f"{path}: lacks column {', '.join(missing)}; {REDO_EVALUATE}")
    for column in numbers:
        raw = table[column]
        table[column] = pd.to_numeric(raw, errors="coerce")
        empty = raw.astype(str).str.strip().str.lower().isin(("", "nan")) & (column in nullable)
        if not (np.isfinite(table[column]) | empty).all():
            raise UserError(f"{path}: column {column} holds a non-number; {REDO_EVALUATE}")
    return table


def load_predictions(path: Path) -> tuple[PackedMasks, list[str]]:
    """The predicted native-size masks and their stems from an evaluate stage's .npz.

    Raises UserError if the file is missing, not an .npz, or its arrays do not fit together.
    """
    try:
        with np.load(path) as data:
            masks, stems = PackedMasks.from_arrays(data, "masks"), data["stems"].tolist()
    except FileNotFoundError:
        raise UserError(f"{path}: predictions not found; run the evaluate stages (dvc repro)") from None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a predictions file ({err!r}); {REDO_EVALUATE}") from None
    if masks.shapes.ndim != 2:
        sizes = None
    else:  # bytes a mask: a byte a pixel for label maps, else 8 pixels a byte
        sizes = masks.shapes.prod(axis=1) if masks.depth == LABELS else (masks.shapes.prod(axis=1) + 7) // 8
    consistent = (
        sizes is not None
        and len(masks.offsets) == len(sizes) + 1 == len(stems) + 1
        and np.array_equal(np.diff(masks.offsets), sizes)
        and masks.offsets[-1] == len(masks.bits)
    )
    if not consistent:
        raise UserError(f"{path}: mask arrays and stems do not fit together; {REDO_EVALUATE}")
    return masks, stems
