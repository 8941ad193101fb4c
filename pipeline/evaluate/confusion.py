"""Multi-class IoU, Dice and pixel accuracy from a C×C confusion matrix accumulated over a dataset.

Rows are the true class, columns the predicted one, entries pixels. A target pixel equal to
:data:`~pipeline.data.masks.IGNORE` is counted nowhere. For class c, TP = M[c, c], FP = column sum − TP,
FN = row sum − TP; IoU (Jaccard 1912) = TP / (TP + FP + FN), Dice (Dice 1945) = 2TP / (2TP + FP + FN).
mIoU is the mean of the per-class IoU of the counts summed over the whole dataset first, as in the
PASCAL VOC segmentation benchmark (Everingham et al. 2010, IJCV 88) and Cityscapes (Cordts et al. 2016),
never an average of per-batch averages.

A class is *present* when it is in the ground truth or predicted somewhere (TP + FP + FN > 0). The
means run over the present classes only: an absent class has IoU 0/0, and counting it as 1 would
reward a model for a class the data never asked about, as 0 would punish it (mmsegmentation's
nanmean over classes makes the same choice). Per-class lists report an absent class as None, so the
results serialise to JSON as they are.
"""

from dataclasses import dataclass, field

import torch

from pipeline.data.masks import IGNORE


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


def _tp_fp_fn(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """TP, FP, FN float64 (..., C) of matrices int (..., C, C), rows true and columns predicted."""
    matrix = matrix.double()
    tp = matrix.diagonal(dim1=-2, dim2=-1)
    return tp, matrix.sum(-2) - tp, matrix.sum(-1) - tp


def class_scores(matrix: torch.Tensor) -> dict[str, float | list]:
    """Scores of one confusion matrix int (C, C) (rows true, columns predicted), e.g. a dataset's sum.

    Returns ``miou`` and ``mdice`` (means over the present classes, see the module docstring),
    ``pixel_accuracy`` (trace / total: the share of counted pixels predicted right), all floats computed
    in float64, and per class lists of length C: ``iou`` and ``dice`` (float, or None for a class
    absent from both truth and prediction), ``pixels`` (int, true pixels of the class: the row sums)
    and ``present`` (bool). Raises ValueError if ``matrix`` is not square 2-D or holds no pixel.
    """
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"expected a C x C confusion matrix, got shape {tuple(matrix.shape)}")
    total = int(matrix.sum())
    if total == 0:
        raise ValueError("the confusion matrix counts no pixel: every pixel was ignored")
    tp, fp, fn = _tp_fp_fn(matrix)
    present = (tp + fp + fn) > 0
    iou = tp / (tp + fp + fn).clamp(min=1)
    dice = 2 * tp / (2 * tp + fp + fn).clamp(min=1)
    return {
        "miou": float(iou[present].mean()),
        "mdice": float(dice[present].mean()),
        "pixel_accuracy": float(tp.sum() / total),
        "iou": [float(v) if p else None for v, p in zip(iou.tolist(), present.tolist(), strict=True)],
        "dice": [float(v) if p else None for v, p in zip(dice.tolist(), present.tolist(), strict=True)],
        "pixels": [int(v) for v in matrix.sum(1).tolist()],
        "present": present.tolist(),
    }


def per_image_miou(matrices: torch.Tensor) -> torch.Tensor:
    """Each image's mIoU float64 (N,) from its confusion matrix int (N, C, C), over the classes present
    in that image's truth or prediction.

    An image with no counted pixel (all ignored) has no present class and gets NaN, not 1.0: it had
    nothing to get right, so it is left out of a mean (``nanmean``) rather than raising it.
    """
    tp, fp, fn = _tp_fp_fn(matrices)
    union = tp + fp + fn
    present = union > 0
    iou_sum = torch.where(present, tp / union.clamp(min=1), torch.zeros_like(union)).sum(-1)
    classes = present.sum(-1)
    return torch.where(classes > 0, iou_sum / classes.clamp(min=1), torch.full_like(iou_sum, float("nan")))


@dataclass
class ConfusionMeter:
    """Accumulates per-image C×C confusion matrices (int64, on the CPU); :meth:`compute` gives
    dataset-level scores from their sum, so never an average of per-batch averages.

    Each :meth:`add` copies its batch's matrices to the CPU (a host sync); a loop that must not sync
    sums :func:`confusion_matrix` (``check=False``) on the device instead.
    """

    num_classes: int
    matrices: list[torch.Tensor] = field(default_factory=list)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch: ``logits`` float (N, C, H, W); ``target`` (N, 1, H, W) class indices, 255 ignored.

        A pixel is predicted as its highest logit's class (argmax over C; the lowest index on a tie).
        Raises ValueError when C is not ``num_classes``, or as :func:`confusion_matrix`.
        """
        if logits.dim() != 4 or logits.shape[1] != self.num_classes:
            raise ValueError(f"expected logits (N, {self.num_classes}, H, W), got shape {tuple(logits.shape)}")
        self.add(logits.detach().argmax(1, keepdim=True), target)

    def add(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of class predictions: ``pred`` and ``target`` as in :func:`confusion_matrix`."""
        self.matrices.append(confusion_matrix(pred.detach(), target.detach(), self.num_classes).cpu())

    def compute(self) -> dict[str, float | int | list]:
        """Return :func:`class_scores` of the summed matrix (miou, mdice, pixel_accuracy and per class
        iou, dice, pixels, present), plus ``miou_per_image`` (the mean of :func:`per_image_miou` over
        the images with a counted pixel) and ``num_images`` (all images added).

        Raises ValueError if no batch was added, or if every pixel added was ignored.
        """
        if not self.matrices:
            raise ValueError("ConfusionMeter.compute() called before any update()")
        per_image = torch.cat(self.matrices)
        scores = class_scores(per_image.sum(0))
        return {
            **scores,
            "miou_per_image": float(per_image_miou(per_image).nanmean()),
            "num_images": int(per_image.shape[0]),
        }
