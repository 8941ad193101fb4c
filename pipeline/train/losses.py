"""Segmentation losses on logits; target pixels equal to :data:`~pipeline.data.masks.IGNORE` count in none.

Binary tasks have one logit per pixel (sigmoid, targets {0, 1, 255}); multi-class tasks C >= 2 logits
(softmax, targets class indices 0..C-1 or 255). :func:`loss_function` picks the kind by the number of
logits, under one name for both.
"""

import functools
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


def bce_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean binary cross-entropy on logits (numerically stable log-sum-exp form), in fp32.

    ``logits`` float (N, 1, H, W); ``target`` float of the same shape in {0, 1, 255}. The mean runs
    over the pixels whose target is not 255 (:data:`IGNORE`); 0 if every pixel is ignored. ``weights``
    (optional) float (2,), the class weights w0, w1: the positive term is weighted w1 / w0 (PyTorch's
    ``pos_weight``). Scalar float32 tensor.
    """
    target, counted = _split_target(target)
    # Mean over all pixels x (all / counted) = mean over the counted ones; the factor is exactly 1.0
    # when none is ignored. Counted in int64, so exact at any batch size; the clamp gives an
    # all-ignored batch 0 / 1, not 0 / 0.
    scale = target.numel() / counted.sum().clamp(min=1)
    positive = None if weights is None else (weights[1] / weights[0]).float()
    return (
        F.binary_cross_entropy_with_logits(logits.float(), target, weight=counted.float(), pos_weight=positive) * scale
    )


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """BCE + soft Dice, equally weighted: per-pixel calibration plus overlap.

    Shapes, the ignore label and ``weights`` (the BCE's only) as :func:`bce_loss`. Scalar tensor.
    """
    return bce_loss(logits, target, weights) + dice_loss(logits, target)


# --- multi-class: C >= 2 logits per pixel, a softmax over them, class-index targets ---------------


def _class_target(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot fp32 (N, C, H, W) of ``target`` with all-zero rows at ignored pixels, and bool ``counted``
    (N, 1, H, W) (not :data:`IGNORE`).

    A comparison with arange(C) rather than F.one_hot: one_hot reads the largest value back to check
    it (a host sync on CUDA) and refuses 255.
    """
    counted = target != IGNORE
    classes = torch.arange(logits.shape[1], device=logits.device).view(1, -1, 1, 1)
    return ((target == classes) & counted).float(), counted


def ce_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean softmax cross-entropy over the counted pixels, in fp32 (the per-pixel multinomial logistic
    loss of Long, Shelhamer & Darrell 2015, FCN, arXiv:1411.4038).

    ``logits`` float (N, C, H, W); ``target`` (N, 1, H, W), any number dtype holding whole class indices
    0..C-1 or 255 (:data:`IGNORE`). ``weights`` (optional) float (C,): each pixel's term is weighted by its
    true class's weight and the mean divides by the sum of the weights (PyTorch's weighted mean). 0 if
    every pixel is ignored. Scalar float32 tensor. A target value outside 0..C-1 other than 255 raises
    IndexError on the CPU (a device-side assert on CUDA).
    """
    labels, counted = target[:, 0].long(), target[:, 0] != IGNORE
    weights = torch.ones(logits.shape[1], device=logits.device) if weights is None else weights.float()
    summed = F.cross_entropy(logits.float(), labels, weight=weights, ignore_index=IGNORE, reduction="sum")
    # Sum / weight rather than reduction="mean": the mean divides an all-ignored batch by 0 (NaN loss and
    # NaN gradient); the clamp makes it 0 / tiny. The total stays on the device (no sync).
    total = (weights[torch.where(counted, labels, 0)] * counted).sum()
    return summed / total.clamp(min=torch.finfo(torch.float32).tiny)


def multiclass_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """Soft Dice loss over the whole batch, p = softmax(logits) over C:
    1 - (1/C) Σ_c (2Σp_c t_c + s) / (Σp_c + Σt_c + s), t_c the one-hot target of class c.

    Each class's term is the soft Dice of :func:`dice_loss` (Milletari, Navab & Ahmadi 2016, V-Net,
    arXiv:1606.04797, linear denominator); the loss is their unweighted mean over the classes present in
    the batch's truth, so a rare class weighs as much as a common one, and a class absent from the batch
    adds no term (the cross-entropy alone pushes its probabilities down there; an absent class's Dice
    term, about s / (Σp_c + s), would only reward predicting it nowhere). Sudre et al. 2017 (generalised Dice,
    arXiv:1707.03237) weight the classes by 1/(Σt_c)² and sum before dividing instead; not done here.
    The sums run over the counted pixels only (an ignored pixel adds neither p nor t).

    ``logits`` float (N, C, H, W); ``target`` as in :func:`ce_loss` (values other than 0..C-1 and 255 are
    not checked and count as no class). Computed in fp32. Scalar float32 tensor in [0, 1]; 0 if every
    pixel is ignored.
    """
    onehot, counted = _class_target(logits, target)
    probs = torch.softmax(logits.float(), dim=1) * counted
    dims = (0, 2, 3)
    intersection = (probs * onehot).sum(dims)
    per_class = (2.0 * intersection + smooth) / (probs.sum(dims) + onehot.sum(dims) + smooth)
    present = onehot.sum(dims) > 0
    return ((1.0 - per_class) * present).sum() / present.sum().clamp(min=1)


def ce_dice_loss(logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy + Dice, equally weighted: :func:`ce_loss` (with ``weights``) + :func:`multiclass_dice_loss`.

    Shapes and the ignore label as :func:`ce_loss`. Scalar float32 tensor.
    """
    return ce_loss(logits, target, weights) + multiclass_dice_loss(logits, target)


# The registries of the `loss` param, in the order of its names in pipeline.core.constants: one name
# serves both kinds of task, the binary function for one logit, the softmax one for C logits.
BINARY_LOSSES: dict[str, LossFn] = dict(zip(constants.LOSSES, (bce_dice_loss, dice_loss, bce_loss), strict=True))
MULTICLASS_LOSSES: dict[str, LossFn] = dict(
    zip(constants.LOSSES, (ce_dice_loss, multiclass_dice_loss, ce_loss), strict=True)
)


def loss_function(name: str, num_logits: int, weights: torch.Tensor | None = None) -> LossFn:
    """The loss called ``name`` (one of :data:`pipeline.core.constants.LOSSES`) for a model with
    ``num_logits`` output channels: the sigmoid (binary) one for 1, the softmax one for 2 or more, with the
    class ``weights`` (float (C,), C = 2 for one logit) in its cross-entropy when given.

    Raises KeyError on an unknown name (the params schema admits only the known ones) and ValueError
    when ``num_logits`` < 1, or for weights with the Dice loss, which has no cross-entropy to weigh (the
    params schema refuses that pair in one line).
    """
    if num_logits < 1:
        raise ValueError(f"num_logits must be at least 1, got {num_logits}")
    # Looked up at each call, so a test may patch one entry of a registry.
    loss = (BINARY_LOSSES if num_logits == 1 else MULTICLASS_LOSSES)[name]
    if weights is None:
        return loss
    if name == "dice":
        raise ValueError("class weights apply to a cross-entropy; the dice loss has none")
    return functools.partial(loss, weights=weights)
