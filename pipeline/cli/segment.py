"""`petseg predict`'s model side: the threshold and TTA a run uses (given, or from the weights' evaluate
record), and the masks of a batch of photos at each photo's own size."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.cli.options import DEFAULT_TTA
from pipeline.core.constants import DEFAULT_THRESHOLD
from pipeline.core.errors import UserError
from pipeline.data.decode import resize_image
from pipeline.data.geometry import pad, padded
from pipeline.evaluate.inference import LoadedModel, native_labels, predict_logits
from pipeline.evaluate.record import eval_record_path, read_eval_record


@dataclass(frozen=True)
class Settings:
    """The ``threshold`` (probability in (0, 1); None for a multi-class model: a pixel takes its highest
    logit's class) and ``tta`` mode a run uses, and ``note``: one line saying where each came from."""

    threshold: float | None
    tta: str
    note: str


def resolve_settings(weights: Path, model: LoadedModel, threshold: float | None, tta: str | None) -> Settings:
    """The threshold and tta for a run: the explicit ``threshold`` / ``tta`` if given (not None), else
    those of the weights' evaluate record (:func:`eval_record_path`) when it is for the same model
    (name and image size), else 0.5 and "none".

    A multi-class model has no threshold: an explicit ``threshold`` raises UserError (one line naming
    the classes), and the record gives only its tta. The record is not read when both are given.
    Raises UserError for a malformed record.
    """
    classes = model.classes
    if not classes.binary and threshold is not None:
        raise UserError(
            f"--threshold: {weights} is a {classes.count}-class model ({', '.join(classes.names)}): each pixel "
            "takes its highest-scoring class, so there is no threshold; drop --threshold"
        )
    # A multi-class model: the default stands in for the threshold, so the record is read for its tta alone.
    threshold = threshold if classes.binary else DEFAULT_THRESHOLD
    record_path = eval_record_path(weights)
    record = None if threshold is not None and tta is not None else read_eval_record(record_path)
    if record is None:
        source = f"default; no {record_path}"
    elif record["model"] != model.name or record["image_size"] not in (None, model.image_size):
        source = f"default; {record_path} is for {record['model']} at {record['image_size']} px, not these weights"
        record = None
    else:
        source = str(record_path)
    threshold_from = source if threshold is None else "--threshold"
    tta_from = source if tta is None else "--tta"
    if threshold is None:
        threshold = record["threshold"] if record else DEFAULT_THRESHOLD
    if tta is None:
        tta = record["tta"] if record else DEFAULT_TTA
    if not classes.binary:
        return Settings(None, tta, f"argmax over {classes.count} classes, tta {tta} ({tta_from})")
    if threshold_from == tta_from:
        note = f"threshold {threshold:g}, tta {tta} ({tta_from})"
    else:
        note = f"threshold {threshold:g} ({threshold_from}), tta {tta} ({tta_from})"
    return Settings(float(threshold), tta, note)


def predict_masks(model: LoadedModel, images: Sequence[Image.Image], settings: Settings) -> list[np.ndarray]:
    """Label maps for RGB photos of any sizes, each uint8 (H, W) at its photo's own size. Each photo is taken
    as the evaluate stage takes the cache's: scaled by the model's ``resize``, padded to a multiple of 32,
    its logits cut to the photo and resized to its own size (:func:`~pipeline.evaluate.inference.native_labels`):
    a binary model's class 1 where sigmoid > ``settings.threshold``, a multi-class model's highest logit's
    class. Photos run one at a time: kept-aspect photos differ in shape."""
    threshold = DEFAULT_THRESHOLD if settings.threshold is None else settings.threshold
    labels = []
    for image in images:
        height, width = model.resize.scaled(image.height, image.width)
        small = pad(resize_image(image, (height, width)), *padded(height, width), 0)
        logits, _ = predict_logits(model.forward, small[None], 1, settings.tta)
        labels.append(native_labels(logits[0, :, :height, :width], image.height, image.width, threshold))
    return labels
