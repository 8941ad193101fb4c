"""Whether a change in test Dice between two evaluations is real: a paired bootstrap over the test images.

Both evaluations scored the same test images; each per-image table (the evaluate stage's
``<model>_per_image.csv``) holds every image's confusion counts ``tp``, ``fp``, ``fn`` (pixels at
native size). A resample draws N of the N images with replacement, the same draw for both, and takes
the difference of the two dataset-level Dice scores recomputed from the summed counts
(:func:`pipeline.evaluate.metrics.dice_from_counts`). The percentile interval of those differences
(Efron & Tibshirani 1993, "An Introduction to the Bootstrap", ch. 13) is the confidence interval of
the change: a change whose interval holds 0 is within the noise of which pets happen to be in the test
set.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline.core.errors import UserError
from pipeline.evaluate.metrics import dice_from_counts

COUNTS = ("tp", "fp", "fn")
BETTER, WORSE, WITHIN_NOISE = "better", "worse", "within noise"
# Per-image Dice values closer than this count as equal (float64 noise, not a change of the image).
EQUAL_DICE = 1e-9


@dataclass(frozen=True)
class DiceChange:
    """The dataset-level Dice of the old and the new evaluation on the same ``images`` test images,
    the ``low``..``high`` confidence interval (at ``level``) of new - old, and how many images' own
    Dice rose (``better``) or fell (``worse``)."""

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
        """New Dice - old Dice."""
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
    """Dataset-level Dice of int64 counts (..., 3) TP, FP, FN summed over the last but one axis."""
    return dice_from_counts(*torch.from_numpy(counts).unbind(-1)).numpy()


def paired_bootstrap(
    old: pd.DataFrame, new: pd.DataFrame, resamples: int, seed: int, level: float, where: str = "per-image tables"
) -> DiceChange:
    """Compare two per-image tables (columns ``stem``, ``dice``, ``tp``, ``fp``, ``fn``) of the same
    test images, paired by stem: ``resamples`` bootstrap draws from ``np.random.default_rng(seed)``,
    interval at confidence ``level`` (e.g. 0.95).

    Raises UserError (naming ``where``) if a table lacks a column, or the two hold other stems (the
    comparison is only meaningful on one test set).
    """
    for name, table in (("old", old), ("new", new)):
        missing = [c for c in ("stem", "dice", *COUNTS) if c not in table.columns]
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
    old = old.set_index("stem")
    new = new.set_index("stem").loc[old.index]
    old_counts, new_counts = (t[list(COUNTS)].to_numpy(np.int64) for t in (old, new))
    draws = np.random.default_rng(seed).integers(0, len(old), size=(resamples, len(old)))
    # Summing through the draws' per-image multiplicities is the sum over each resample, in one product.
    weights = np.zeros((resamples, len(old)), np.int64)
    np.add.at(weights, (np.arange(resamples)[:, None], draws), 1)
    deltas = _dice(weights @ new_counts) - _dice(weights @ old_counts)
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(deltas, [tail, 100 - tail])
    per_image = new["dice"].to_numpy() - old["dice"].to_numpy()
    return DiceChange(
        old=float(_dice(old_counts.sum(0))),
        new=float(_dice(new_counts.sum(0))),
        low=float(low),
        high=float(high),
        level=level,
        better=int((per_image > EQUAL_DICE).sum()),
        worse=int((per_image < -EQUAL_DICE).sum()),
        images=len(old),
    )
