"""Test-set scoring of a multi-class task (C > 2 classes, C logits): per-class IoU and Dice, mIoU, breakdowns.

The multi-class counterpart of :mod:`pipeline.evaluate.scoring`. A pixel is predicted as its highest
logit's class (argmax; no threshold, so ``evaluate.threshold`` does not apply). Every score comes from
C×C confusion matrices (:func:`~pipeline.evaluate.confusion.confusion_matrix`: rows true class, columns
predicted, entries pixels), one per image; dataset-level scores come from the matrices summed over the
images first (:func:`~pipeline.evaluate.confusion.class_scores`), never from averaged per-batch scores.
Means over classes run over the classes *present* (in the truth or the prediction), as in
:mod:`pipeline.evaluate.confusion`. Pixels the cache marks 255 (:data:`~pipeline.data.masks.IGNORE`)
are in no count.

Per image, ``miou`` and ``dice`` are the mean IoU and mean Dice over the classes present in that image;
an image whose every pixel is ignored has neither (NaN) and is left out of the means over images.
"""

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline.data.classes import Classes
from pipeline.data.masks import LABELS, PackedMasks
from pipeline.evaluate.confusion import class_scores, confusion_matrix, per_image_miou
from pipeline.evaluate.inference import Forward, native_labels, prepare, tta_forward


def iter_class_logits(
    forward: Forward, images: np.ndarray, batch_size: int, tta: str
) -> Iterator[tuple[np.ndarray, float]]:
    """Logits float32 (B, C, S, S) of uint8 images (N, S, S, 3), ``batch_size`` images at a time, in
    order, each batch with the seconds spent in ``forward`` on it (:func:`~pipeline.evaluate.inference.iter_logits`
    keeps the one channel of a binary model; this keeps all C). Memory: one batch."""
    for start in range(0, len(images), batch_size):
        x = prepare(images[start : start + batch_size])
        tic = time.perf_counter()
        logits = tta_forward(forward, x, tta)  # hflip flips the last axis, whatever C is
        yield logits, time.perf_counter() - tic


@dataclass(frozen=True)
class ClassScored:
    """Per-image results: ``native`` and ``at_size`` confusion matrices int64 (N, C, C) (rows true class,
    columns predicted, pixels), and the predicted label maps at native resolution (``predictions``,
    depth :data:`~pipeline.data.masks.LABELS`: uint8 class indices)."""

    native: np.ndarray
    at_size: np.ndarray
    predictions: PackedMasks


class ClassScorer:
    """Scores C-channel logits batch by batch, so memory holds one batch of logits, not the split's.

    ``masks`` uint8 (N, S, S) class indices 0..C-1 and 255 (ignored) are the at-size ground truth (a
    memory map is fine: it is read one batch at a time); ``native`` the N label maps at each photo's
    own size (depth :data:`~pipeline.data.masks.LABELS`, 255 ignored); ``num_classes`` C. At native size
    each image's logits are resized bilinearly to its label map's size, then argmax
    (:func:`~pipeline.evaluate.inference.native_labels`). Raises ValueError if the counts of masks and
    native masks differ or ``native`` is not a label map pack, and (from :meth:`add`) on a class index
    outside 0..C-1 in a mask.
    """

    def __init__(self, masks: np.ndarray, native: PackedMasks, num_classes: int):
        if len(masks) != len(native):
            raise ValueError(f"{len(masks)} masks, {len(native)} native masks")
        if native.depth != LABELS:
            raise ValueError(f"native masks must be label maps (depth {LABELS}), got depth {native.depth}")
        self.masks, self.native, self.classes = masks, native, num_classes
        n, c = len(masks), num_classes
        # Made up front, as in scoring.Scorer: small arrays kept an image at a time fragment the heap.
        self.at_size = np.zeros((n, c, c), np.int64)
        self.native_matrices = np.zeros((n, c, c), np.int64)
        # A predicted label map has its truth's shape, so it packs into the same bytes (a byte a pixel).
        self.labels = np.empty(len(native.bits), np.uint8)
        self.seen = 0

    def add(self, logits: np.ndarray) -> None:
        """Score the next images' logits float32 (B, C, S, S), in the order of ``masks``. Raises
        ValueError if more logits come than there are masks, or they have other than C channels."""
        start, stop = self.seen, self.seen + len(logits)
        if stop > len(self.masks):
            raise ValueError(f"{stop} logits, {len(self.masks)} masks")
        if logits.ndim != 4 or logits.shape[1] != self.classes:
            raise ValueError(f"expected logits (B, {self.classes}, S, S), got shape {logits.shape}")
        truth = torch.from_numpy(np.array(self.masks[start:stop]))
        pred = torch.from_numpy(np.ascontiguousarray(logits)).argmax(1)
        self.at_size[start:stop] = confusion_matrix(pred, truth, self.classes).numpy()
        for i, image_logits in enumerate(logits, start):
            truth = self.native[i]
            pred = native_labels(image_logits, *truth.shape)
            self.labels[self.native.offsets[i] : self.native.offsets[i + 1]] = pred.ravel()
            matrix = confusion_matrix(torch.from_numpy(pred[None]), torch.from_numpy(truth[None]), self.classes)
            self.native_matrices[i] = matrix[0].numpy()
        self.seen = stop

    def result(self) -> ClassScored:
        """The :class:`ClassScored` of every image. Raises ValueError if fewer logits came than masks."""
        if self.seen != len(self.masks):
            raise ValueError(f"{self.seen} logits, {len(self.masks)} masks")
        native = self.native
        predictions = PackedMasks(self.labels, np.array(native.offsets), np.array(native.shapes), LABELS)
        return ClassScored(self.native_matrices, self.at_size, predictions)


def score_classes(logits: np.ndarray, masks: np.ndarray, native: PackedMasks, num_classes: int) -> ClassScored:
    """Score logits float32 (N, C, S, S) held in memory at once (a :class:`ClassScorer` given one batch).
    Arguments and errors as in :class:`ClassScorer`."""
    scorer = ClassScorer(masks, native, num_classes)
    scorer.add(logits)
    return scorer.result()


def per_image_mdice(matrices: np.ndarray) -> np.ndarray:
    """Each image's mean Dice float64 (N,) over the classes present in its truth or prediction, from its
    confusion matrix int (N, C, C); NaN for an image with no counted pixel (as
    :func:`~pipeline.evaluate.confusion.per_image_miou`)."""
    m = matrices.astype(np.float64)
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    fp, fn = m.sum(-2) - tp, m.sum(-1) - tp
    denominator = 2 * tp + fp + fn
    present = denominator > 0
    dice = np.where(present, 2 * tp / np.maximum(denominator, 1), 0.0).sum(-1)
    classes = present.sum(-1)
    return np.where(classes > 0, dice / np.maximum(classes, 1), np.nan)


def _per_image_miou(matrices: np.ndarray) -> np.ndarray:
    return per_image_miou(torch.from_numpy(matrices)).numpy()


def _mean(values: np.ndarray) -> float | None:
    """Mean of the finite values (images with a counted pixel); None (JSON null) if there is none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else None


def _miou(matrices: np.ndarray) -> float:
    """Dataset-level mIoU of matrices (N, C, C) summed first; NaN if they count no pixel."""
    total = matrices.sum(0)
    return class_scores(torch.from_numpy(total))["miou"] if total.sum() else math.nan


def class_headline(scored: ClassScored) -> dict[str, float | None]:
    """The test scores a reviewer compares (:data:`~pipeline.core.constants.MULTICLASS_HEADLINE_METRICS`
    without the training's best valid mIoU and epoch, which the stage adds): ``miou`` and ``dice`` (mean
    class IoU and Dice of the summed matrices, over the present classes), ``dice_per_image`` (the mean over
    images of each image's mean class Dice, :func:`per_image_mdice`) and ``pixel_accuracy``, at each
    photo's own size; ``miou_at_image_size`` at the cache's square size, against the resized masks.
    Raises ValueError if every pixel of the split is ignored."""
    native = class_scores(torch.from_numpy(scored.native.sum(0)))
    at_size = class_scores(torch.from_numpy(scored.at_size.sum(0)))
    return {
        "miou": native["miou"],
        "dice": native["mdice"],
        "dice_per_image": _mean(per_image_mdice(scored.native)),
        "miou_at_image_size": at_size["miou"],
        "pixel_accuracy": native["pixel_accuracy"],
    }


def class_details(scored: ClassScored, classes: Classes, species: list[str]) -> dict:
    """What else the matrices say, after the headline in ``metrics/<model>.json``, all at native size:
    ``per_class`` {name: {iou, dice, pixels}} in class order (``pixels`` the class's true pixels; iou and
    dice None for a class neither in the truth nor predicted), ``miou_per_image`` (mean of the per-image
    mIoU), ``species`` {name: {miou, miou_per_image, images}} and ``images``."""
    native = class_scores(torch.from_numpy(scored.native.sum(0)))
    per_class = {
        name: {"iou": native["iou"][c], "dice": native["dice"][c], "pixels": native["pixels"][c]}
        for c, name in enumerate(classes.names)
    }
    names, by_species = np.array(species), {}
    miou = _per_image_miou(scored.native)
    for name in sorted(set(species)):
        group = names == name
        value = _miou(scored.native[group])
        by_species[name] = {
            "miou": None if math.isnan(value) else value,
            "miou_per_image": _mean(miou[group]),
            "images": int(group.sum()),
        }
    return {
        "per_class": per_class,
        "miou_per_image": _mean(miou),
        "species": by_species,
        "images": len(scored.native),
    }


def class_per_image_table(
    scored: ClassScored, classes: Classes, stems: list[str], breeds: list[str], species: list[str]
) -> pd.DataFrame:
    """One row per image, at native resolution: stem, breed, species, width, height (pixels), miou and dice
    (the image's mean class IoU and Dice over its present classes; NaN, an empty CSV cell, when every
    pixel is ignored), then per class, in class order, ``tp_<name>``, ``fp_<name>``, ``fn_<name>``
    (pixels), the counts they come from: with them a comparison can recompute the dataset-level per-class
    IoU of any subset of images."""
    m = scored.native
    tp = np.diagonal(m, axis1=-2, axis2=-1)
    fp, fn = m.sum(-2) - tp, m.sum(-1) - tp
    shapes = scored.predictions.shapes
    columns = {
        "stem": stems,
        "breed": breeds,
        "species": species,
        "width": shapes[:, 1],
        "height": shapes[:, 0],
        "miou": _per_image_miou(m),
        "dice": per_image_mdice(m),
    }
    for c, name in enumerate(classes.names):
        columns |= {f"tp_{name}": tp[:, c], f"fp_{name}": fp[:, c], f"fn_{name}": fn[:, c]}
    return pd.DataFrame(columns)


def class_per_breed_table(scored: ClassScored, per_image: pd.DataFrame) -> pd.DataFrame:
    """One row per breed (a folder dataset's images are all breed and species "unknown": one row):
    breed, species, images, miou (dataset-level within the breed: its images' matrices summed; NaN if
    all its pixels are ignored), miou_per_image (mean of the per-image mIoU); sorted by miou, worst first."""
    rows = []
    for (breed, species), group in per_image.groupby(["breed", "species"], sort=True):
        index = group.index.to_numpy()
        mean = _mean(group["miou"].to_numpy())
        rows.append((breed, species, len(group), _miou(scored.native[index]), math.nan if mean is None else mean))
    table = pd.DataFrame(rows, columns=["breed", "species", "images", "miou", "miou_per_image"])
    return table.sort_values(["miou", "breed"], kind="stable").reset_index(drop=True)
