"""Segmentation losses on logits; target pixels equal to :data:`~pipeline.data.masks.IGNORE` count in none."""

from collections.abc import Callable

import torch
import torch.nn.functional as F

from pipeline.core import constants
from pipeline.data.masks import IGNORE

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Additive smoothing of the soft Dice: keeps the loss defined (and its gradient finite) on batches
# with no foreground; 1.0 is the usual choice (e.g. segmentation_models.pytorch's DiceLoss).
DICE_SMOOTH = 1.0


def _split_target(target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 target with ignored pixels set to 0, and bool ``counted`` (not :data:`IGNORE`), both target's shape.

    Multiplying by a weight of exactly 1.0 changes no bit, so a target without IGNORE gives the
    same losses and gradients as the unweighted formulas.
    """
    target = target.float()
    valid = target != IGNORE
    return torch.where(valid, target, torch.zeros_like(target)), valid


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Soft Dice loss over the whole batch: 1 - (2Σpt + s) / (Σp + Σt + s), p = sigmoid(logits).

    Milletari, Navab & Ahmadi 2016 (V-Net, arXiv:1606.04797) use Σp² + Σt² in the denominator; the
    linear form here is the common variant. ``logits`` float (N, 1, H, W); ``target`` float of the
    same shape with values in {0, 1, 255}; the sums run over the pixels whose target is not 255
    (:data:`IGNORE`). Computed in fp32. Returns a scalar float32 tensor in [0, 1].
    """
    target, counted = _split_target(target)
    probs = torch.sigmoid(logits.float()) * counted
    intersection = (probs * target).sum()
    return 1.0 - (2.0 * intersection + smooth) / (probs.sum() + target.sum() + smooth)


def bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy on logits (numerically stable log-sum-exp form), in fp32.

    ``logits`` float (N, 1, H, W); ``target`` float of the same shape in {0, 1, 255}. The mean runs
    over the pixels whose target is not 255 (:data:`IGNORE`); 0 if every pixel is ignored. Scalar
    float32 tensor.
    """
    target, counted = _split_target(target)
    # Mean over all pixels x (all / counted) = mean over the counted ones; the factor is exactly 1.0
    # when none is ignored. Counted in int64, so exact at any batch size; the clamp gives an
    # all-ignored batch 0 / 1, not 0 / 0.
    scale = target.numel() / counted.sum().clamp(min=1)
    return F.binary_cross_entropy_with_logits(logits.float(), target, weight=counted.float()) * scale


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BCE + soft Dice, equally weighted: per-pixel calibration plus overlap.

    Shapes and the ignore label as :func:`bce_loss`. Scalar tensor.
    """
    return bce_loss(logits, target) + dice_loss(logits, target)


# The registry of the `loss` param, in the order of its names in pipeline.core.constants.
LOSSES: dict[str, LossFn] = dict(zip(constants.LOSSES, (bce_dice_loss, dice_loss, bce_loss), strict=True))
