"""Every score from one place: C×C confusion matrices, for any task (a binary task is the two-class case).

Logits become a label map first (:func:`to_labels`: sigmoid > threshold for one logit, argmax for C), then
each image gets a confusion matrix: rows the true class, columns the predicted one, entries pixels; a target
pixel equal to :data:`~pipeline.data.masks.IGNORE` is counted nowhere. A dataset's matrix is the sum of its
images' matrices, so its scores are never averages of per-batch averages. The shape follows torchvision's
references/segmentation ``ConfusionMatrix`` (a bincount of ``C * true + pred``) and smp's ``get_stats``
(per-class TP, FP, FN).

For class c: TP = M[c, c], FP = column sum − TP, FN = row sum − TP, and

- IoU (Jaccard 1912) = TP / (TP + FP + FN), Dice (Dice 1945; the F1 score) = 2TP / (2TP + FP + FN),
- precision = TP / (TP + FP), recall = TP / (TP + FN), pixel accuracy = trace / total.

mIoU is the mean of the per-class IoU of the summed counts, as in the PASCAL VOC segmentation benchmark
(Everingham et al. 2010, IJCV 88) and Cityscapes (Cordts et al. 2016). A class is *present* when it is in
the ground truth or predicted somewhere (TP + FP + FN > 0); means over classes run over the present ones
only (mmsegmentation's nanmean makes the same choice), and per-class lists give None for an absent class.

A task's headline score, derived from the same matrices (:func:`task_metric`): for two classes, ``dice``,
the Dice of class 1 (the foreground; 1.0 when truth and prediction are both empty, which a per-image mean
needs); for more, ``miou``.
"""

import torch

from pipeline.core.constants import DEFAULT_THRESHOLD
from pipeline.data.masks import IGNORE


def task_metric(num_classes: int) -> str:
    """The score that ranks models and epochs of a task with ``num_classes`` classes: "dice" (of class 1)
    for a binary task, "miou" for more classes, where a mean Dice would let a large class hide a missed
    small one less visibly than IoU does."""
    return "dice" if num_classes == 2 else "miou"


def to_labels(logits: torch.Tensor, threshold: float) -> torch.Tensor:
    """Label maps int64 (N, H, W) of logits float (N, L, H, W): for L = 1 (a binary task), class 1 where
    sigmoid(logit) > ``threshold``; for L = C, the class of the highest logit (the lowest index on a tie;
    ``threshold`` is not used). No host sync."""
    if logits.shape[1] == 1:
        return (torch.sigmoid(logits[:, 0]) > threshold).long()
    return logits.argmax(1)


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int, check: bool = True) -> torch.Tensor:
    """Per-image confusion matrices int64 (N, C, C) on the device of the inputs, rows = true class,
    columns = predicted class, entries in pixels; pixels where ``target`` is 255 are counted nowhere.

    ``pred``: (N, ...) tensor of class indices 0..C-1 (any integer dtype, or bool for C = 2);
    ``target``: the same shape, whole class indices 0..C-1 or 255 (:data:`IGNORE`) in any number dtype
    (a float target's fractions are truncated, not checked). ``num_classes`` C in 1..255 (255 is the
    ignore label, so it cannot be a class).

    Raises ValueError when the shapes differ, C is out of range, or (with ``check``) a value of
    ``pred``, or of ``target`` other than 255, is outside 0..C-1. The value check reads one bool back
    from the device: a host sync on CUDA. A loop that must not sync (the training loop's per-step sums)
    passes ``check=False``; then an out-of-range value either raises an indexing error or lands in a
    wrong cell, so check the data once elsewhere. Without the check nothing syncs: the counts are a
    scatter-add, not ``torch.bincount``, which on CUDA reads its input's min and max back to size
    its output.
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    if not 1 <= num_classes <= IGNORE:
        raise ValueError(f"num_classes must be in 1..{IGNORE}, got {num_classes}")
    if pred.dim() < 1:
        raise ValueError("pred and target need a leading image dimension (N, ...)")
    n, c = pred.shape[0], num_classes
    pred, target = pred.reshape(n, -1).long(), target.reshape(n, -1).long()
    counted = target != IGNORE
    if check:
        bad_pred = (pred < 0) | (pred >= c)
        bad_target = counted & ((target < 0) | (target >= c))
        if bool((bad_pred | bad_target).any()):
            values = torch.cat([pred[bad_pred], target[bad_target]]).unique().tolist()
            raise ValueError(f"class indices must be in 0..{c - 1} (or {IGNORE} in target), got {values}")
    image = torch.arange(n, device=pred.device).unsqueeze(1)
    # An ignored pixel adds 0 to cell 0 instead of being dropped: dropping it (boolean indexing) would
    # size the result by reading a count back from the device.
    index = torch.where(counted, (image * c + target) * c + pred, 0)
    counts = torch.zeros(n * c * c, dtype=torch.int64, device=pred.device)
    return counts.index_add_(0, index.flatten(), counted.flatten().long()).view(n, c, c)


def class_counts(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TP, FP, FN (..., C) of matrices (..., C, C), rows true and columns predicted, in their dtype."""
    tp = matrix.diagonal(dim1=-2, dim2=-1)
    return tp, matrix.sum(-2) - tp, matrix.sum(-1) - tp


def dice_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """Dice = 2TP / (2TP + FP + FN), elementwise float64; 1.0 where truth and prediction are both empty."""
    tp, fp, fn = (t.double() for t in (tp, fp, fn))
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.ones_like(denom))


def iou_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """IoU = TP / (TP + FP + FN), elementwise float64; 1.0 where truth and prediction are both empty."""
    tp, fp, fn = (t.double() for t in (tp, fp, fn))
    denom = tp + fp + fn
    return torch.where(denom > 0, tp / denom.clamp(min=1), torch.ones_like(denom))


def foreground(matrices: torch.Tensor) -> dict[str, torch.Tensor]:
    """A binary task's scores of class 1 from matrices int (..., 2, 2): ``dice`` and ``iou`` float64 (...)
    (1.0 where truth and prediction are both empty: the image had nothing to find and found nothing) and
    ``fraction``, class 1's share of the counted truth pixels (NaN where none is counted)."""
    tp, fp, fn = (t[..., 1] for t in class_counts(matrices.double()))
    total = matrices.sum((-2, -1))
    return {
        "dice": dice_from_counts(tp, fp, fn),
        "iou": iou_from_counts(tp, fp, fn),
        "fraction": (tp + fn) / total.double(),
    }


def _or_none(values: torch.Tensor, defined: torch.Tensor) -> list[float | None]:
    return [float(v) if d else None for v, d in zip(values.tolist(), defined.tolist(), strict=True)]


def class_scores(matrix: torch.Tensor) -> dict[str, float | list]:
    """Scores of one confusion matrix int (C, C) (rows true, columns predicted), e.g. a dataset's sum.

    Returns ``miou`` and ``mdice`` (means over the present classes), ``pixel_accuracy`` (trace / total),
    all floats computed in float64, and per class lists of length C: ``iou`` and ``dice`` (None for a class
    absent from truth and prediction), ``precision`` (None for a class never predicted), ``recall`` (None
    for a class not in the truth), ``pixels`` (int, true pixels of the class: the row sums) and ``present``
    (bool). Raises ValueError if ``matrix`` is not square 2-D or holds no pixel.
    """
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a C x C confusion matrix, got shape {tuple(matrix.shape)}")
    total = int(matrix.sum())
    if total == 0:
        raise ValueError("the confusion matrix counts no pixel: every pixel was ignored")
    tp, fp, fn = class_counts(matrix.double())
    present = (tp + fp + fn) > 0
    iou = tp / (tp + fp + fn).clamp(min=1)
    dice = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    return {
        "miou": float(iou[present].mean()),
        "mdice": float(dice[present].mean()),
        "pixel_accuracy": float(tp.sum() / total),
        "iou": _or_none(iou, present),
        "dice": _or_none(dice, present),
        "precision": _or_none(tp / (tp + fp).clamp(min=1), (tp + fp) > 0),
        "recall": _or_none(tp / (tp + fn).clamp(min=1), (tp + fn) > 0),
        "pixels": [int(v) for v in matrix.sum(1).tolist()],
        "present": present.tolist(),
    }


def task_scores(matrix: torch.Tensor) -> dict[str, float]:
    """The scores a training validates by, from one summed matrix int (C, C): {"dice"} (of class 1, 1.0 when
    truth and prediction hold no class-1 pixel, every pixel ignored included) for C = 2; {"dice", "miou"}
    (mean class Dice, mIoU) for more classes, which raises as :func:`class_scores`."""
    if matrix.shape[-1] == 2:
        return {"dice": float(foreground(matrix)["dice"])}
    scores = class_scores(matrix)
    return {"dice": scores["mdice"], "miou": scores["miou"]}


def miou_from_counts(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    """mIoU float64 (...) over the classes present (TP + FP + FN > 0) of per-class counts (..., C); NaN
    where no class is present."""
    tp, fp, fn = (t.double() for t in (tp, fp, fn))
    union = tp + fp + fn
    present = union > 0
    iou_sum = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(union)).sum(-1)
    classes = present.sum(-1)
    return torch.where(classes > 0, iou_sum / classes.clamp(min=1), torch.full_like(iou_sum, float("nan")))


def per_image_miou(matrices: torch.Tensor) -> torch.Tensor:
    """Each image's mIoU float64 (N,) from its confusion matrix int (N, C, C), over the classes present
    in that image's truth or prediction (:func:`miou_from_counts`).

    An image with no counted pixel (all ignored) has no present class and gets NaN, not 1.0: it had
    nothing to get right, so it is left out of a mean (``nanmean``) rather than raising it.
    """
    return miou_from_counts(*class_counts(matrices))


def per_image_mdice(matrices: torch.Tensor) -> torch.Tensor:
    """Each image's mean Dice float64 (N,) over the classes present in its truth or prediction, from its
    confusion matrix int (N, C, C); NaN for an image with no counted pixel (as :func:`per_image_miou`)."""
    tp, fp, fn = class_counts(matrices.double())
    denominator = 2 * tp + fp + fn
    present = denominator > 0
    dice = torch.where(present, 2 * tp / denominator.clamp(min=1), torch.zeros_like(tp)).sum(-1)
    classes = present.sum(-1)
    return torch.where(classes > 0, dice / classes.clamp(min=1), torch.full_like(dice, float("nan")))


class ConfusionMeter:
    """Accumulates a dataset's C×C confusion matrix on the device of the data, with no host sync until
    :meth:`compute`: the meter of the training's validation and of the evaluate stage's scorer alike.

    ``num_classes`` C (a binary task: 2, its logits one channel); ``threshold`` the sigmoid threshold of a
    binary task's logits (:func:`to_labels`); ``check`` as in :func:`confusion_matrix` (off in a loop that
    must not sync). ``total`` is the summed int64 (C, C) matrix.
    """

    def __init__(
        self,
        num_classes: int,
        threshold: float = DEFAULT_THRESHOLD,
        device: torch.device | str = "cpu",
        check: bool = True,
    ):
        self.num_classes, self.threshold, self.check = num_classes, threshold, check
        self.total = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=device)
        self.images = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Add a batch of logits float (N, L, H, W) (L = 1 for two classes, else C) against ``target``
        (N, 1, H, W) or (N, H, W) class indices, 255 ignored; returns its per-image matrices int64 (N, C, C).
        Raises ValueError when L does not fit C, or as :func:`confusion_matrix` (other sizes included)."""
        channels = 1 if self.num_classes == 2 else self.num_classes
        if logits.dim() != 4 or logits.shape[1] != channels:
            raise ValueError(f"expected logits (N, {channels}, H, W), got shape {tuple(logits.shape)}")
        if target.dim() == 4 and target.shape[1] == 1:
            target = target[:, 0]
        return self.add(to_labels(logits.detach().float(), self.threshold), target.detach())

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Add label maps ``pred`` (N, ...) against ``target`` of the same shape; returns the per-image
        matrices int64 (N, C, C). Raises as :func:`confusion_matrix`."""
        matrices = confusion_matrix(pred, target, self.num_classes, self.check)
        self.total += matrices.sum(0)
        self.images += len(matrices)
        return matrices

    def compute(self) -> dict[str, float | list]:
        """:func:`class_scores` of the summed matrix, plus :func:`task_scores` under ``task`` and
        ``num_images``. Raises ValueError if no batch was added, or every pixel added was ignored."""
        if self.images == 0:
            raise ValueError("ConfusionMeter.compute() called before any update()")
        total = self.total.cpu()
        return {**class_scores(total), "task": task_scores(total), "num_images": self.images}
