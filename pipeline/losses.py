"""Segmentation losses on logits."""

from collections.abc import Callable

import torch
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Additive smoothing of the soft Dice: keeps the loss defined (and its gradient finite) on batches
# with no foreground; 1.0 is the usual choice (e.g. segmentation_models.pytorch's DiceLoss).
DICE_SMOOTH = 1.0


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Soft Dice loss over the whole batch: 1 - (2Σpt + s) / (Σp + Σt + s), p = sigmoid(logits).

    Milletari, Navab & Ahmadi 2016 (V-Net, arXiv:1606.04797) use Σp² + Σt² in the denominator; the
    linear form here is the common variant. ``logits`` float (N, 1, H, W); ``target`` float of the
    same shape with values in {0, 1}. Returns a scalar float tensor in [0, 1].
    """
    probs = torch.sigmoid(logits.float())
    target = target.float()
    intersection = (probs * target).sum()
    return 1.0 - (2.0 * intersection + smooth) / (probs.sum() + target.sum() + smooth)


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy on logits (numerically stable log-sum-exp form).

    ``logits`` float (N, 1, H, W); ``target`` float of the same shape in {0, 1}. Scalar tensor.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), target.float())


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice, equally weighted: per-pixel calibration plus overlap.

    Shapes as :func:`bce_loss`. Scalar tensor.
    """
    return bce_loss(logits, target) + dice_loss(logits, target)


LOSSES: dict[str, LossFn] = {"bce_dice": bce_dice_loss, "dice": dice_loss, "bce": bce_loss}
