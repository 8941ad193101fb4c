"""Dice, IoU and pixel accuracy from confusion counts accumulated over a dataset.

A target pixel equal to :data:`~pipeline.data.masks.IGNORE` is in none of TP, FP, FN, TN.
"""

from dataclasses import dataclass, field

import torch

from pipeline.core.constants import DEFAULT_THRESHOLD
from pipeline.data.masks import IGNORE


def confusion_counts(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image counts of a binary prediction, on the device of the inputs (no host sync).

    ``pred``: (N, ...) tensor of {0, 1} or bool; ``target``: the same shape, {0, 1, 255} (any
    number dtype) or bool; pixels where ``target`` is 255 (:data:`IGNORE`) are counted nowhere.
    Returns int64 (N, 4) with columns TP, FP, FN, TN, in pixels.
    """
    pred = pred.bool().flatten(1)
    counted = (target != IGNORE).flatten(1)
    target = target.bool().flatten(1) & counted
    tp = (pred & target).sum(1)
    fp = (pred & ~target & counted).sum(1)
    fn = (~pred & target).sum(1)
    tn = (~pred & ~target & counted).sum(1)
    return torch.stack([tp, fp, fn, tn], dim=1).long()


def dice_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """Dice = 2TP / (2TP + FP + FN) (Dice 1945), elementwise float64; 1.0 where both masks are empty."""
    tp, fp, fn = (t.double() for t in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.ones_like(denom))


def iou_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """IoU (Jaccard) = TP / (TP + FP + FN), elementwise float64; 1.0 where both masks are empty."""
    tp, fp, fn = (t.double() for t in (tp, fp, fn))
    denom = tp + fp + fn
    return torch.where(denom > 0, tp / denom.clamp(min=1), torch.ones_like(denom))


@dataclass
class SegmentationMeter:
    """Accumulates per-image confusion counts; :meth:`compute` gives dataset-level metrics.

    Dataset-level Dice and IoU sum TP/FP/FN over all pixels of all images first, so they are not
    averages of per-batch averages. ``dice_per_image`` is the mean of each image's own Dice.
    """

    threshold: float = DEFAULT_THRESHOLD
    counts: list[torch.Tensor] = field(default_factory=list)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``logits`` float (N, 1, H, W); ``target`` (N, 1, H, W) in {0, 1, 255}, 255 ignored.

        A pixel is predicted pet when sigmoid(logit) > ``threshold``.
        """
        self.add(torch.sigmoid(logits.detach().float()) > self.threshold, target)

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of binary predictions: ``pred`` (N, ...) in {0, 1} or bool; ``target`` as in
        :func:`confusion_counts` (255 ignored)."""
        self.counts.append(confusion_counts(pred.detach(), target.detach()).cpu())

    def compute(self) -> dict[str, float | int]:
        """Return dice, iou, pixel_accuracy, dice_per_image (floats) and num_images (int).

        Raises ValueError if no batch was added.
        """
        if not self.counts:
            raise ValueError("SegmentationMeter.compute() called before any update()")
        per_image = torch.cat(self.counts)
        tp, fp, fn, tn = per_image.sum(0)
        return {
            "dice": float(dice_from_counts(tp, fp, fn)),
            "iou": float(iou_from_counts(tp, fp, fn)),
            "pixel_accuracy": float((tp + tn).double() / per_image.sum().double()),
            "dice_per_image": float(dice_from_counts(*per_image[:, :3].T).mean()),
            "num_images": int(per_image.shape[0]),
        }
