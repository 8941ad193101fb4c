"""The evaluation record beside a model's weights: the threshold and TTA its test metrics used.

The evaluate stage writes ``<weights stem>.eval.json`` next to the weights (models/unet.pt and
models/unet.onnx share models/unet.eval.json), so ``petseg predict`` can default to them. A multi-class
model's pixels take their highest logit's class, with no threshold: its record's threshold is null.
"""

import json
from pathlib import Path

from pipeline.core.constants import TTA_MODES
from pipeline.core.errors import UserError
from pipeline.core.io import write_json


def write_eval_record(path: Path, model: str, image_size: int, threshold: float | None, tta: str) -> None:
    """Write the record ``{"model", "image_size" (pixels), "threshold", "tta"}`` atomically; ``threshold``
    None (JSON null) for a multi-class model."""
    write_json(path, {"model": model, "image_size": image_size, "threshold": threshold, "tta": tta})


def eval_record_path(weights: Path) -> Path:
    """Where the evaluate stage records the threshold and tta used for ``weights``: ``<stem>.eval.json``
    beside them (models/unet.pt and models/unet.onnx share models/unet.eval.json)."""
    weights = Path(weights)
    return weights.with_name(f"{weights.stem}.eval.json")


def read_eval_record(path: Path) -> dict | None:
    """Read an evaluate-stage record ``{"model", "image_size", "threshold", "tta"}``; None if absent.

    Returns the dict with ``model`` (str), ``threshold`` (float, strictly between 0 and 1; None for a
    multi-class model, which has none: the caller, which knows the model's classes, decides), ``tta``
    (one of :data:`~pipeline.core.constants.TTA_MODES`) and ``image_size`` (int pixels, or None if not
    recorded). Raises UserError if the file is unreadable, not JSON, or lacks a valid value.
    """
    try:
        record = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not an evaluate record ({err}); rerun the evaluate stage or delete it") from None
    fix = "rerun the evaluate stage or delete the file"
    if not isinstance(record, dict):
        raise UserError(f"{path}: expected a JSON object with model, threshold and tta; {fix}")
    model, threshold, tta, size = (record.get(k) for k in ("model", "threshold", "tta", "image_size"))
    if not isinstance(model, str):
        raise UserError(f"{path}: model must be a model name, got {model!r}; {fix}")
    # bool is an int subclass; true/false is no threshold.
    number = not isinstance(threshold, bool) and isinstance(threshold, (int, float))
    # A missing threshold is a broken record; null is a multi-class model's.
    if "threshold" not in record or (threshold is not None and not (number and 0 < threshold < 1)):
        raise UserError(
            f"{path}: threshold must be a number strictly between 0 and 1 (or null), got {threshold!r}; {fix}"
        )
    if tta not in TTA_MODES:
        raise UserError(f"{path}: tta must be one of {', '.join(TTA_MODES)}, got {tta!r}; {fix}")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int)):
        raise UserError(f"{path}: image_size must be an integer, got {size!r}; {fix}")
    threshold = None if threshold is None else float(threshold)
    return {"model": model, "threshold": threshold, "tta": tta, "image_size": size}
