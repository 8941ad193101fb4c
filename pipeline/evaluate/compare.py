"""Whether a change in the test score between two evaluations is real: a paired bootstrap over the test images.

Both evaluations scored the same test images; each per-image table (the evaluate stage's
``<model>_per_image.csv``) holds every image's confusion counts (pixels at native size): ``tp``, ``fp``,
``fn`` for a binary task, whose score is the Dice of class 1; ``tp_<class>``, ``fp_<class>``,
``fn_<class>`` per class for a multi-class task, whose score is the mIoU over the classes present
(:mod:`pipeline.evaluate.confusion`). A resample draws N of the N images with replacement, the same draw
for both, and takes the difference of the two dataset-level scores recomputed from the summed counts
(:mod:`pipeline.evaluate.confusion`: class 1's Dice, or the mIoU of the summed per-class counts). The
percentile interval of those differences
(Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13) is the confidence interval of
the change: a change whose interval holds 0 is within the noise of which pets happen to be in the test
set. A multi-class task's classes get the same interval of their own IoU, from the same resamples.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline.core.constants import CLASS_IOU
from pipeline.core.errors import UserError
from pipeline.evaluate.confusion import dice_from_counts, iou_from_counts, miou_from_counts

COUNTS = ("tp", "fp", "fn")
BETTER, WORSE, WITHIN_NOISE = "better", "worse", "within noise"
# Per-image Dice values closer than this count as equal (float64 noise, not a change of the image).
EQUAL_DICE = 1e-9


@dataclass(frozen=True)
class DiceChange:
    """The dataset-level score (``metric``: "dice" for a binary task, "miou" for a multi-class one, or
    ``iou_<class>``, one class's IoU: :func:`class_changes`) of the old and the new evaluation on the same
    ``images`` test images, the ``low``..``high`` confidence interval (at ``level``) of new - old, and how many
    images' own score rose (``better``) or fell (``worse``)."""

    metric: str
    old: float
    new: float
    low: float
    high: float
    level: float
    better: int
    worse: int
    images: int

    @property
    def change(self) -> float:
        """New score - old score."""
        return self.new - self.old

    @property
    def verdict(self) -> str:
        """ "better" or "worse" when the interval excludes 0, else "within noise"."""
        if self.low > 0:
            return BETTER
        if self.high < 0:
            return WORSE
        return WITHIN_NOISE


def _dice(counts: np.ndarray) -> np.ndarray:
    """Dataset-level Dice of int64 summed counts (..., 3): TP, FP, FN."""
    return dice_from_counts(*torch.from_numpy(counts).unbind(-1)).numpy()


def _miou(counts: np.ndarray) -> np.ndarray:
    """Dataset-level mIoU of int64 summed counts (..., 3C): TP, FP, FN of each class in turn, over the
    classes present (:func:`pipeline.evaluate.confusion.miou_from_counts`)."""
    t = torch.from_numpy(counts)
    return miou_from_counts(t[..., 0::3], t[..., 1::3], t[..., 2::3]).numpy()


def _iou(counts: np.ndarray) -> np.ndarray:
    """One class's IoU of int64 counts (..., 3): TP, FP, FN."""
    return iou_from_counts(*torch.from_numpy(counts).unbind(-1)).numpy()


def _columns(table: pd.DataFrame) -> tuple[str, list[str]]:
    """The score and the count columns of a per-image table: ("dice", tp/fp/fn) for a binary task,
    ("miou", tp_<c>/fp_<c>/fn_<c> of each class in turn) for a multi-class one."""
    if "miou" not in table.columns:
        return "dice", list(COUNTS)
    classes = [c[len("tp_") :] for c in table.columns if c.startswith("tp_")]
    return "miou", [f"{kind}_{name}" for name in classes for kind in COUNTS]


def _checked_columns(old: pd.DataFrame, new: pd.DataFrame, where: str) -> tuple[str, list[str]]:
    """The score and count columns both tables share (:func:`_columns`). Raises UserError as
    :func:`paired_bootstrap` says."""
    metric, counts = _columns(new)
    if _columns(old) != (metric, counts):
        raise UserError(f"{where}: the two evaluations are of different tasks or classes; nothing to compare")
    for name, table in (("old", old), ("new", new)):
        missing = [c for c in ("stem", metric, *(counts or ["tp_<class>"])) if c not in table.columns]
        if missing:
            raise UserError(
                f"{where}: the {name} table lacks {', '.join(missing)} (written by an older petseg); "
                "rerun its evaluate stages"
            )
    only_old, only_new = set(old["stem"]) - set(new["stem"]), set(new["stem"]) - set(old["stem"])
    if only_old or only_new or len(old) != len(new):
        raise UserError(
            f"{where}: the two evaluations scored different test images ({len(only_old)} only in the old, "
            f"{len(only_new)} only in the new); compare revisions of the same data"
        )
    return metric, counts


def _weights(images: int, resamples: int, seed: int) -> np.ndarray:
    """Each resample's multiplicity of every image, int64 (resamples, images): N of the N images drawn with
    replacement from ``np.random.default_rng(seed)``, so a resample's summed counts are one product."""
    draws = np.random.default_rng(seed).integers(0, images, size=(resamples, images))
    weights = np.zeros((resamples, images), np.int64)
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1)
    return weights


def _change(metric, score, old_counts, new_counts, old_own, new_own, weights, level) -> DiceChange:
    """The :class:`DiceChange` of ``score`` (summed counts (..., K) → float64 (...)) between per-image counts
    int64 (N, K), resampled by ``weights`` (:func:`_weights`); ``old_own``/``new_own`` float64 (N,) are each
    image's own score (NaN compares as neither better nor worse)."""
    deltas = score(weights @ new_counts) - score(weights @ old_counts)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(deltas, [tail, 100 - tail])
    per_image = new_own - old_own
    return DiceChange(
        metric=metric,
        old=float(score(old_counts.sum(0))),
        new=float(score(new_counts.sum(0))),
        low=float(low),
        high=float(high),
        level=level,
        better=int((per_image > EQUAL_DICE).sum()),
        worse=int((per_image < -EQUAL_DICE).sum()),
        images=len(old_counts),
    )


def _paired(old: pd.DataFrame, new: pd.DataFrame, where: str) -> tuple[str, list[str], pd.DataFrame, pd.DataFrame]:
    """The score and count columns (:func:`_checked_columns`) and both tables indexed by stem, in one order."""
    metric, counts = _checked_columns(old, new, where)
    old = old.set_index("stem")
    return metric, counts, old, new.set_index("stem").loc[old.index]


def paired_bootstrap(
    old: pd.DataFrame, new: pd.DataFrame, resamples: int, seed: int, level: float, where: str = "per-image tables"
) -> DiceChange:
    """Compare two per-image tables of the same test images, paired by stem: columns ``stem``, ``dice``,
    ``tp``, ``fp``, ``fn`` (a binary task), or ``stem``, ``miou`` and ``tp_<class>``, ``fp_<class>``,
    ``fn_<class>`` per class (a multi-class task). ``resamples`` bootstrap draws from
    ``np.random.default_rng(seed)``, interval at confidence ``level`` (e.g. 0.95). An image whose own
    score is NaN on either side (every pixel ignored) counts as neither better nor worse.

    Raises UserError (naming ``where``) if a table lacks a column, the two are of different tasks or
    classes, or they hold other stems (the comparison is only meaningful on one test set).
    """
    metric, counts, old, new = _paired(old, new, where)
    old_counts, new_counts = (t[counts].to_numpy(np.int64) for t in (old, new))
    own = (t[metric].to_numpy(np.float64) for t in (old, new))
    weights = _weights(len(old), resamples, seed)
    return _change(metric, _dice if metric == "dice" else _miou, old_counts, new_counts, *own, weights, level)


def class_changes(
    old: pd.DataFrame, new: pd.DataFrame, resamples: int, seed: int, level: float, where: str = "per-image tables"
) -> list[DiceChange]:
    """Each class's test IoU change between two multi-class per-image tables (as :func:`paired_bootstrap`,
    with its resamples for the same ``seed``): one :class:`DiceChange` per class in the tables' order, its
    ``metric`` ``iou_<class>`` (:data:`~pipeline.core.constants.CLASS_IOU`), its scores the IoU of the class's
    summed TP, FP, FN (:func:`pipeline.evaluate.confusion.iou_from_counts`), and an image better or worse by
    its own IoU of the class. [] for a binary task, whose score is already class 1's.

    Raises UserError as :func:`paired_bootstrap`.
    """
    metric, counts, old, new = _paired(old, new, where)
    if metric == "dice":
        return []
    weights = _weights(len(old), resamples, seed)
    changes = []
    for i in range(0, len(counts), len(COUNTS)):
        columns = counts[i : i + len(COUNTS)]
        old_counts, new_counts = (t[columns].to_numpy(np.int64) for t in (old, new))
        name = columns[0][len("tp_") :]
        own = (_iou(c) for c in (old_counts, new_counts))
        changes.append(_change(f"{CLASS_IOU}{name}", _iou, old_counts, new_counts, *own, weights, level))
    return changes


def verdict(change: DiceChange, seed_range: float | None = None) -> str:
    """The verdict on ``change`` given the noise of training: :attr:`DiceChange.verdict` (whether the paired
    bootstrap's interval excludes 0: the noise of which images are in the test set) when ``seed_range`` is
    None; else "better" or "worse" only when the change's size also exceeds ``seed_range``, the range (max - min)
    of the score over training seeds of one setting (`petseg seeds`), since two runs of one setting differ by
    up to that much with no change at all. Else "within noise"."""
    if seed_range is not None and abs(change.change) <= seed_range:
        return WITHIN_NOISE
    return change.verdict
