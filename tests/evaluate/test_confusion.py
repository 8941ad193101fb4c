"""Scores of every task from confusion matrices (pipeline/evaluate/confusion.py): label maps of logits, the
per-image C×C matrices (a binary task is the two-class case), per-class IoU, Dice, precision and recall and
their means over the present classes, per-image scores and the dataset-level meter, with ignored pixels
(255) counted nowhere; cross-checked against torchmetrics."""

import json
import math

import numpy as np
import pytest
import torch

from pipeline.data.masks import IGNORE
from pipeline.evaluate.confusion import (
    ConfusionMeter,
    class_counts,
    class_scores,
    confusion_matrix,
    dice_from_counts,
    foreground,
    iou_from_counts,
    miou_from_counts,
    per_image_mdice,
    per_image_miou,
    task_metric,
    task_scores,
    to_labels,
)

TASKS = ["binary", "3 classes"]

# One 3x4 image, 3 classes.
TRUTH = [[0, 0, 1, 1], [0, 2, 2, 1], [2, 2, 2, 0]]
PRED = [[0, 1, 1, 1], [0, 2, 1, 1], [2, 2, 0, 2]]
# Rows true, columns predicted:     TP  FP (column - TP)  FN (row - TP)
MATRIX = [[2, 1, 1], [0, 3, 0], [1, 1, 3]]  # class 0: 2, 1, 2; class 1: 3, 2, 0; class 2: 3, 1, 2


def _image(rows, dtype=torch.int64):
    return torch.tensor(rows, dtype=dtype)[None]


def _logits(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Logits float32 (N, L, ...) whose label map (:func:`to_labels` at 0.5) is ``labels`` int (N, ...): one
    channel of ±5 for two classes, 10 at each pixel's class of C channels for more."""
    if num_classes == 2:
        return torch.where(labels == 1, 5.0, -5.0)[:, None]
    return 10.0 * torch.nn.functional.one_hot(labels.long(), num_classes).movedim(-1, 1).float()


# --- per-image matrices and per-class scores, by hand ------------------------------------------------

# Binary: two 1x4 images. Image 0: pred [1 1 0 0] vs truth [1 0 1 0]: TP, FP, FN, TN one each.
# Image 1: nothing predicted against one pet pixel of four: TN 3, FN 1. Summed [[4, 1], [2, 1]]:
# class 0 TP 4, FP 2, FN 1; class 1 TP 1, FP 1, FN 2.
HAND = {
    "binary": {
        "pred": [[1, 1, 0, 0], [0, 0, 0, 0]],
        "truth": [[1, 0, 1, 0], [0, 0, 0, 1]],
        "matrices": [[[1, 1], [1, 1]], [[3, 0], [1, 0]]],
        # TP, FP, FN of each class per image.
        "counts": ([[1, 1], [3, 0]], [[1, 1], [1, 0]], [[1, 1], [0, 1]]),
        "iou": [4 / 7, 1 / 4],
        "dice": [8 / 11, 2 / 5],
        "precision": [4 / 6, 1 / 2],
        "recall": [4 / 5, 1 / 3],
        "pixel_accuracy": 5 / 8,
        "pixels": [5, 3],
    },
    "3 classes": {
        "pred": [sum(PRED, [])],
        "truth": [sum(TRUTH, [])],
        "matrices": [MATRIX],
        "counts": ([[2, 3, 3]], [[1, 2, 1]], [[2, 0, 2]]),
        # IoU = TP / (TP + FP + FN): 2/(2+1+2), 3/(3+2+0), 3/(3+1+2).
        "iou": [2 / 5, 3 / 5, 1 / 2],
        # Dice = 2TP / (2TP + FP + FN): 4/(4+1+2), 6/(6+2+0), 6/(6+1+2).
        "dice": [4 / 7, 3 / 4, 2 / 3],
        "precision": [2 / 3, 3 / 5, 3 / 4],  # TP / (TP + FP)
        "recall": [2 / 4, 3 / 3, 3 / 5],  # TP / (TP + FN)
        "pixel_accuracy": 8 / 12,  # the diagonal: 2 + 3 + 3 of 12 pixels
        "pixels": [4, 3, 5],
    },
}


@pytest.mark.parametrize("task", TASKS)
def test_hand_computed_matrices_counts_and_class_scores(task):
    case = HAND[task]
    c = len(case["pixels"])
    matrices = confusion_matrix(torch.tensor(case["pred"]), torch.tensor(case["truth"]), c)
    assert matrices.dtype == torch.int64 and matrices.tolist() == case["matrices"]
    tp, fp, fn = class_counts(matrices)
    assert tp.dtype == torch.int64 and (tp.tolist(), fp.tolist(), fn.tolist()) == case["counts"]
    scores = class_scores(matrices.sum(0))
    for key in ("iou", "dice", "precision", "recall", "pixels"):
        assert scores[key] == case[key], key
    assert scores["miou"] == pytest.approx(sum(case["iou"]) / c)
    assert scores["mdice"] == pytest.approx(sum(case["dice"]) / c)
    assert scores["pixel_accuracy"] == case["pixel_accuracy"]
    assert scores["present"] == [True] * c


def test_dice_and_iou_from_counts_including_empty_masks():
    tp, fp, fn = torch.tensor([3, 0, 0]), torch.tensor([1, 0, 2]), torch.tensor([2, 0, 0])
    assert dice_from_counts(tp, fp, fn).tolist() == pytest.approx([6 / 9, 1.0, 0.0])
    assert iou_from_counts(tp, fp, fn).tolist() == pytest.approx([3 / 6, 1.0, 0.0])
    assert dice_from_counts(tp, fp, fn).dtype == iou_from_counts(tp, fp, fn).dtype == torch.float64


def test_iou_and_dice_of_one_pixel_images_are_exactly_zero_or_one():
    # Three images with a single counted pixel each: right (TP), a false alarm (FP), a miss (FN).
    tp, fp, fn = torch.tensor([1, 0, 0]), torch.tensor([0, 1, 0]), torch.tensor([0, 0, 1])
    assert iou_from_counts(tp, fp, fn).tolist() == [1.0, 0.0, 0.0]
    assert dice_from_counts(tp, fp, fn).tolist() == [1.0, 0.0, 0.0]


# --- the ignore label (255) ----------------------------------------------------------------------------

# Binary, one 2x3 image, the pixel (0, 2) ignored (predicted pet there, which must not count as FP):
# pred   [1 1 1]    truth [1 0 255]   → (0,0) TP, (0,1) FP, (0,2) nothing,
#        [0 1 0]          [1 1 0  ]   → (1,0) FN, (1,1) TP, (1,2) TN.
# 3 classes: the 3x4 image with its first column (truth 0, 0, 2, each predicted right) ignored: two
# (0, 0) and one (2, 2) fewer. Class 0: TP 0, FP 1, FN 2; class 1: 3, 2, 0; class 2: 2, 1, 2.
IGNORED = {
    "binary": {
        "pred": [[1, 1, 1], [0, 1, 0]],
        "truth": [[1, 0, IGNORE], [1, 1, 0]],
        "pred_dtypes": (torch.int64, torch.bool),
        "matrix": [[1, 1], [1, 2]],
        "pixel_accuracy": 3 / 5,  # 5 counted pixels, not 6
        "pixels": [2, 3],
        "task": {"dice": 4 / 6},
    },
    "3 classes": {
        "pred": PRED,
        "truth": [[IGNORE, 0, 1, 1], [IGNORE, 2, 2, 1], [IGNORE, 2, 2, 0]],
        "pred_dtypes": (torch.int64, torch.uint8),
        "matrix": [[0, 1, 1], [0, 3, 0], [1, 1, 2]],
        "pixel_accuracy": 5 / 9,  # 9 counted pixels, not 12
        "pixels": [2, 3, 4],
        "task": {"dice": (0 + 6 / 8 + 4 / 7) / 3, "miou": (0 + 3 / 5 + 2 / 5) / 3},
    },
}


@pytest.mark.parametrize("task", TASKS)
def test_ignored_pixels_are_counted_nowhere_for_any_dtype_and_in_the_float_masks_of_the_training_loop(task):
    case = IGNORED[task]
    c = len(case["pixels"])
    for pred_dtype in case["pred_dtypes"]:
        for dtype in (torch.uint8, torch.int64, torch.float32):
            matrix = confusion_matrix(_image(case["pred"], pred_dtype), _image(case["truth"], dtype), c)
            assert matrix.tolist() == [case["matrix"]], (pred_dtype, dtype)
    scores = class_scores(torch.tensor(case["matrix"]))
    assert scores["pixel_accuracy"] == pytest.approx(case["pixel_accuracy"])
    assert scores["pixels"] == case["pixels"]
    # The training loop's validation passes logits and float masks (N, 1, H, W) with 255.0 ignored.
    meter = ConfusionMeter(c)
    logits = _logits(_image(case["pred"]), c)
    matrices = meter.update(logits, _image(case["truth"], torch.float32)[:, None])
    assert matrices.tolist() == [case["matrix"]] and meter.total.tolist() == case["matrix"]
    result = meter.compute()
    assert result["task"] == pytest.approx(case["task"])
    assert result["pixel_accuracy"] == pytest.approx(case["pixel_accuracy"])


@pytest.mark.parametrize("c", [2, 5])
def test_matrix_equals_a_numpy_reference_on_random_data(c):
    rng = np.random.default_rng(c)
    n = 4
    truth = rng.integers(0, c, (n, 7, 9))
    truth[rng.random(truth.shape) < 0.2] = IGNORE
    pred = rng.integers(0, c, (n, 7, 9))
    reference = np.zeros((n, c, c), np.int64)
    image = np.broadcast_to(np.arange(n)[:, None, None], truth.shape)
    counted = truth != IGNORE
    np.add.at(reference, (image[counted], truth[counted], pred[counted]), 1)
    ours = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth).to(torch.uint8), c)
    assert np.array_equal(ours.numpy(), reference)
    unchecked = confusion_matrix(torch.from_numpy(pred), torch.from_numpy(truth), c, check=False)
    assert torch.equal(unchecked, ours)


def test_two_classes_give_the_binary_counts_and_scores_of_the_foreground():
    # The two-class matrix's class 1 is what a binary task counts: pet pixels found, false alarms, misses.
    generator = torch.Generator().manual_seed(2)
    pred = torch.randint(0, 2, (3, 1, 9, 9), generator=generator)
    target = torch.randint(0, 2, (3, 1, 9, 9), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.15] = IGNORE
    matrix = confusion_matrix(pred, target, 2).sum(0)
    tp, fp, fn = (t[1] for t in class_counts(matrix))
    counted = target != IGNORE
    assert int(tp) == int(((pred == 1) & (target == 1)).sum())
    assert int(fp) == int(((pred == 1) & (target == 0)).sum())
    assert int(fn) == int(((pred == 0) & (target == 1)).sum())
    assert int(matrix.sum()) == int(counted.sum())
    scores = class_scores(matrix)
    fg = foreground(matrix)
    assert float(fg["iou"]) == scores["iou"][1] == float(iou_from_counts(tp, fp, fn))
    assert float(fg["dice"]) == scores["dice"][1] == task_scores(matrix)["dice"]
    assert float(fg["fraction"]) == pytest.approx(int((target == 1).sum()) / int(counted.sum()))
    assert 0 < scores["iou"][1] < 1  # a real, non-trivial score


def test_foreground_scores_each_image_and_its_pet_fraction():
    # The two binary images above and a third whose every pixel is ignored.
    matrices = torch.tensor([[[1, 1], [1, 1]], [[3, 0], [1, 0]], [[0, 0], [0, 0]]])
    scores = foreground(matrices)
    assert scores["dice"].dtype == torch.float64
    # Image 0: class 1 TP 1, FP 1, FN 1; image 1: TP 0, FP 0, FN 1; image 2: nothing to find, nothing found.
    assert scores["dice"].tolist() == pytest.approx([2 / 4, 0.0, 1.0])
    assert scores["iou"].tolist() == pytest.approx([1 / 3, 0.0, 1.0])
    # Class 1's share of the counted truth pixels: 2 of 4, 1 of 4, none counted.
    assert scores["fraction"][:2].tolist() == [2 / 4, 1 / 4] and math.isnan(scores["fraction"][2])


# --- logits to labels, and the meter -------------------------------------------------------------------


def _random_batch(seed, c, n=6, size=8):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1 if c == 2 else c, size, size, generator=generator)
    target = torch.randint(0, c, (n, 1, size, size), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.1] = IGNORE
    return logits, target


@pytest.mark.parametrize(
    ("c", "threshold", "logits", "target", "labels", "matrix", "task"),
    [
        # Probabilities 0.62 and 0.38 against pet, background: right at 0.5, the pet missed at 0.7.
        (2, 0.5, [[0.5, -0.5]], [1, 0], [1, 0], [[1, 0], [0, 1]], {"dice": 1.0}),
        (2, 0.7, [[0.5, -0.5]], [1, 0], [0, 0], [[1, 0], [1, 0]], {"dice": 0.0}),
        # Logit 0 is probability exactly 0.5: not pet at threshold 0.5, as in the training loop's validation.
        (2, 0.5, [[0.0, 0.0]], [0, 1], [0, 0], [[1, 0], [1, 0]], {"dice": 0.0}),
        # 3 classes: the highest logit's class (0 and 2), whatever the threshold.
        (3, 0.5, [[3.0, 0.0], [1.0, 0.0], [0.0, 2.0]], [0, 1], [0, 2], [[1, 0, 0], [0, 0, 1], [0, 0, 0]], None),
        (3, 0.99, [[3.0, 0.0], [1.0, 0.0], [0.0, 2.0]], [0, 1], [0, 2], [[1, 0, 0], [0, 0, 1], [0, 0, 0]], None),
        # A tie goes to the lower class: 1 at the first pixel, 0 at the second.
        (3, 0.5, [[0.0, 1.0], [1.0, 1.0], [1.0, 0.0]], [1, 0], [1, 0], [[1, 0, 0], [0, 1, 0], [0, 0, 0]], None),
    ],
    ids=["binary at 0.5", "binary at 0.7", "binary logit 0", "argmax", "argmax, threshold unused", "argmax tie"],
)
def test_update_labels_pixels_as_the_task_says(c, threshold, logits, target, labels, matrix, task):
    logits = torch.tensor(logits)[None, :, None]  # (1, L, 1, 2)
    assert to_labels(logits, threshold).tolist() == [[labels]]
    assert to_labels(logits, threshold).dtype == torch.int64
    meter = ConfusionMeter(c, threshold)
    assert meter.update(logits, torch.tensor([[target]])).tolist() == [matrix]
    assert meter.total.tolist() == matrix
    if task is not None:
        assert meter.compute()["task"] == task


@pytest.mark.parametrize("c", [2, 4])
def test_meter_is_the_same_for_one_pass_and_two_halves(c):
    logits, target = _random_batch(1, c)
    whole, halves = ConfusionMeter(c), ConfusionMeter(c)
    per_image = whole.update(logits, target)
    halves.update(logits[:2], target[:2])
    halves.update(logits[2:], target[2:])
    assert torch.equal(halves.total, whole.total) and torch.equal(per_image.sum(0), whole.total)
    assert halves.compute() == whole.compute()
    assert whole.compute()["num_images"] == 6
    assert whole.total.sum() == (target != IGNORE).sum() > 0


# Two batches of one image each. Binary: batch 1 is 1 TP, 1 FP, 0 FN, 2 TN; batch 2 is 9 TP, 0 FP, 3 FN,
# 0 TN. Summed, class 1: TP 10, FP 1, FN 3; class 0: TP 2, FP 3, FN 1. 3 classes: batch 1 is the
# hand-computed image (mIoU 1/2), batch 2 three pixels of class 0, all right; summed, class 0 has TP
# 2 + 3 = 5, FP 1, FN 2; classes 1 and 2 as before.
SUMMED = {
    "binary": {
        "batches": [([[1, 1, 0, 0]], [[1, 0, 0, 0]]), ([[1] * 9 + [0] * 3], [[1] * 12])],
        "iou": [2 / 6, 10 / 14],
        "task": {"dice": 20 / 24},
        "batch_scores": [2 / 3, 18 / 21],
        "pixel_accuracy": 12 / 16,
        "per_image": (lambda m: foreground(m)["dice"], [2 / 3, 18 / 21]),
    },
    "3 classes": {
        "batches": [([sum(PRED, [])], [sum(TRUTH, [])]), ([[0, 0, 0]], [[0, 0, 0]])],
        "iou": [5 / 8, 3 / 5, 1 / 2],
        "task": {"miou": (5 / 8 + 3 / 5 + 1 / 2) / 3, "dice": (10 / 13 + 3 / 4 + 2 / 3) / 3},
        "batch_scores": [1 / 2, 1.0],
        "pixel_accuracy": 11 / 15,
        "per_image": (per_image_miou, [1 / 2, 1.0]),  # batch 2's image: only class 0, IoU 1
    },
}


@pytest.mark.parametrize("task", TASKS)
def test_meter_sums_counts_over_the_dataset_not_batch_averages(task):
    case = SUMMED[task]
    c = len(case["iou"])
    meter, matrices = ConfusionMeter(c), []
    for pred, target in case["batches"]:
        matrices.append(meter.update(_logits(torch.tensor(pred)[:, None], c), torch.tensor(target)[:, None, None]))
    result = meter.compute()
    assert result["iou"] == pytest.approx(case["iou"])
    assert result["task"] == pytest.approx(case["task"])
    assert result["pixel_accuracy"] == pytest.approx(case["pixel_accuracy"])
    assert result["num_images"] == 2
    per_image, expected = case["per_image"]
    assert per_image(torch.cat(matrices)).tolist() == pytest.approx(expected)
    # The mean of the two batch scores would differ: the meter must not compute that.
    metric = task_metric(c)
    batch_scores = [task_scores(m.sum(0))[metric] for m in matrices]
    assert batch_scores == pytest.approx(case["batch_scores"])
    assert result["task"][metric] != pytest.approx(sum(batch_scores) / 2)


@pytest.mark.parametrize("c", [2, 3])
def test_a_one_pixel_object_found_scores_one_and_missed_or_false_scores_zero(c):
    # A tiny image whose only counted pixel is the object (class C - 1): found → its IoU 1; missed, or
    # the background predicted as it → 0. The ignored pixel, predicted as the object, counts nowhere.
    obj = c - 1
    target = torch.tensor([[[[obj, IGNORE]]]])
    found, missed, false_alarm = ConfusionMeter(c), ConfusionMeter(c), ConfusionMeter(c)
    found.update(_logits(torch.tensor([[[obj, obj]]]), c), target)
    missed.update(_logits(torch.tensor([[[0, obj]]]), c), target)
    false_alarm.update(_logits(torch.tensor([[[obj, 0]]]), c), torch.tensor([[[[0, IGNORE]]]]))
    assert found.compute()["iou"][obj] == 1.0 and found.compute()["pixel_accuracy"] == 1.0
    assert missed.compute()["iou"][obj] == 0.0 and missed.compute()["recall"][obj] == 0.0
    assert false_alarm.compute()["iou"][obj] == 0.0 and false_alarm.compute()["pixel_accuracy"] == 0.0
    assert false_alarm.compute()["precision"][obj] == 0.0 and false_alarm.compute()["recall"][obj] is None


def test_absent_classes_are_none_and_left_out_of_the_means_and_the_result_is_json():
    # 4 classes, class 3 neither true nor predicted anywhere: mIoU over classes 0..2 only.
    meter = ConfusionMeter(4)
    meter.add(_image(PRED), _image(TRUTH))
    result = meter.compute()
    assert result["iou"] == [2 / 5, 3 / 5, 1 / 2, None] and result["dice"][3] is None
    assert result["precision"][3] is None and result["recall"][3] is None
    assert result["present"] == [True, True, True, False] and result["pixels"][3] == 0
    assert result["miou"] == pytest.approx(1 / 2) and result["task"]["miou"] == result["miou"]
    json.dumps(result, allow_nan=False)
    # A class only predicted (false alarms) is present, with IoU 0, precision 0 and no recall.
    scores = class_scores(torch.tensor([[1, 1], [0, 0]]))
    assert scores["iou"] == [1 / 2, 0.0] and scores["miou"] == 1 / 4
    assert scores["precision"] == [1.0, 0.0] and scores["recall"] == [1 / 2, None]


def test_the_task_score_is_class_1_dice_for_two_classes_and_the_miou_for_more():
    assert (task_metric(2), task_metric(3), task_metric(7)) == ("dice", "miou", "miou")
    # Two classes, nothing to find and nothing found: class 1 is absent from the class scores, but the
    # task's Dice is 1 (the image had nothing to get wrong).
    background = torch.tensor([[6, 0], [0, 0]])
    assert class_scores(background)["dice"] == [1.0, None]
    assert task_scores(background) == {"dice": 1.0}
    # Two classes: class 1's Dice, not the mean Dice over both classes.
    binary = torch.tensor([[4, 1], [2, 1]])  # HAND's binary sum: class 0 Dice 8/11, class 1 2/5
    assert task_scores(binary) == {"dice": pytest.approx(2 / 5)}
    # More classes: mean class Dice and mIoU over the present classes.
    assert task_scores(torch.tensor(MATRIX)) == pytest.approx(
        {"dice": (4 / 7 + 3 / 4 + 2 / 3) / 3, "miou": (2 / 5 + 3 / 5 + 1 / 2) / 3}
    )


def test_per_image_miou_and_mdice_are_nan_for_an_image_with_no_counted_pixel():
    pred = torch.stack([_image(PRED)[0], _image(TRUTH)[0], _image(PRED)[0]])
    truth = torch.stack([_image(TRUTH)[0], _image(TRUTH)[0], torch.full((3, 4), IGNORE)])
    meter = ConfusionMeter(3)
    matrices = meter.add(pred, truth)
    miou, mdice = per_image_miou(matrices), per_image_mdice(matrices)
    assert miou.dtype == mdice.dtype == torch.float64
    assert miou[0].item() == pytest.approx(1 / 2) and miou[1].item() == 1.0 and math.isnan(miou[2].item())
    assert mdice[0].item() == pytest.approx((4 / 7 + 3 / 4 + 2 / 3) / 3) and mdice[1].item() == 1.0
    assert math.isnan(mdice[2].item())
    # Left out of a mean over images, not counted as 0 or 1.
    assert float(miou.nanmean()) == pytest.approx((1 / 2 + 1) / 2)
    assert meter.compute()["num_images"] == 3
    # An image with a class absent from its truth and prediction: the mean runs over the present ones.
    # Class 0: TP 3, FP 1, FN 1 → Dice 6/8; class 1: TP 2, FP 1, FN 2 → 4/7; class 2: TP 2, FP 2, FN 1 → 4/7.
    hand = torch.tensor([[[3, 1, 0, 0], [0, 2, 2, 0], [1, 0, 2, 0], [0, 0, 0, 0]]])
    assert per_image_mdice(hand).tolist() == pytest.approx([(6 / 8 + 4 / 7 + 4 / 7) / 3])
    assert per_image_miou(hand).tolist() == pytest.approx([(3 / 5 + 2 / 5 + 2 / 5) / 3])


def test_miou_from_counts_runs_over_the_last_axis_and_the_present_classes():
    # Row 0: the hand-computed image's counts (mIoU 1/2) and an absent class 3; row 1: no class present.
    tp = torch.tensor([[2, 3, 3, 0], [0, 0, 0, 0]])
    fp = torch.tensor([[1, 2, 1, 0], [0, 0, 0, 0]])
    fn = torch.tensor([[2, 0, 2, 0], [0, 0, 0, 0]])
    miou = miou_from_counts(tp, fp, fn)
    assert miou.shape == (2,) and miou[0].item() == pytest.approx(1 / 2) and math.isnan(miou[1].item())


# --- against torchmetrics ------------------------------------------------------------------------------


def _torchmetrics_binary_case():
    """One-logit logits (N, 1, H, W) at threshold 0.3, truth with ignored pixels."""
    generator = torch.Generator().manual_seed(4)
    logits = torch.randn(5, 1, 12, 10, generator=generator)
    target = torch.randint(0, 2, (5, 1, 12, 10), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.1] = IGNORE
    return logits, target, 0.3


def test_agrees_with_torchmetrics_for_one_logit_and_a_threshold():
    logits, target, threshold = _torchmetrics_binary_case()
    meter = ConfusionMeter(2, threshold)
    meter.update(logits, target)
    ours = meter.compute()
    from torchmetrics import classification as tm  # a dev dependency: this test runs in `make test`

    # Class 1, from the logits themselves: torchmetrics applies the sigmoid and the strict threshold.
    options = {"threshold": threshold, "ignore_index": IGNORE}
    binary = {
        "iou": tm.BinaryJaccardIndex(**options),
        "dice": tm.BinaryF1Score(**options),
        "precision": tm.BinaryPrecision(**options),
        "recall": tm.BinaryRecall(**options),
    }
    theirs = {key: float(metric(logits, target)) for key, metric in binary.items()}
    for key, value in theirs.items():
        assert ours[key][1] == pytest.approx(value, rel=1e-6), key
    assert ours["task"]["dice"] == pytest.approx(theirs["dice"], rel=1e-6)
    accuracy = float(tm.BinaryAccuracy(**options)(logits, target))
    assert ours["pixel_accuracy"] == pytest.approx(accuracy, rel=1e-6)
    # Both classes, from the thresholded label map.
    labels = (torch.sigmoid(logits[:, 0]) > threshold).long()
    _agrees_per_class(ours, labels, target, 2)
    # The threshold matters here: at 0.5 the scores differ.
    at_half = ConfusionMeter(2)
    at_half.update(logits, target)
    assert at_half.compute()["iou"][1] != pytest.approx(ours["iou"][1], rel=1e-3)


def test_agrees_with_torchmetrics_on_the_present_classes_with_ignored_pixels():
    logits, target = _random_batch(3, c=5)
    target[target == 4] = 0  # class 4 absent from the truth, perhaps predicted
    meter = ConfusionMeter(5)
    meter.update(logits, target)
    ours = meter.compute()
    # torchmetrics takes the argmax of the logits (N, C, H, W) itself.
    _agrees_per_class(ours, logits, target, 5)
    assert ours["recall"][4] is None and (target == IGNORE).any()


def _agrees_per_class(ours: dict, preds: torch.Tensor, target: torch.Tensor, c: int) -> None:
    """Per-class IoU, Dice (F1), precision and recall (average=None) and micro accuracy of torchmetrics
    equal ``ours`` wherever ours is defined (a present class; a predicted one for precision, a true one
    for recall); fails if nothing is compared."""
    from torchmetrics import classification as tm

    options = {"num_classes": c, "ignore_index": IGNORE}
    theirs = {
        "iou": tm.MulticlassJaccardIndex(average=None, **options),
        "dice": tm.MulticlassF1Score(average=None, **options),
        "precision": tm.MulticlassPrecision(average=None, **options),
        "recall": tm.MulticlassRecall(average=None, **options),
    }
    compared = 0
    for key, metric in theirs.items():
        values = metric(preds, target[:, 0]).tolist()
        for cls, (mine, other) in enumerate(zip(ours[key], values, strict=True)):
            if mine is not None:
                assert mine == pytest.approx(other, rel=1e-6), (key, cls)
                compared += 1
    assert compared >= 4 * (c - 1)
    accuracy = tm.MulticlassAccuracy(average="micro", **options)
    assert ours["pixel_accuracy"] == pytest.approx(float(accuracy(preds, target[:, 0])), rel=1e-6)


# --- refusals ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "target", "message"),
    [
        (torch.zeros(1, 4), torch.zeros(1, 5), "differ in shape"),
        (torch.tensor([[0, 3]]), torch.tensor([[0, 1]]), r"0\.\.2 \(or 255 in target\), got \[3\]"),
        (torch.tensor([[0, IGNORE]]), torch.tensor([[0, 1]]), r"got \[255\]"),
        (torch.tensor([[0, 1]]), torch.tensor([[-1, 1]]), r"got \[-1\]"),
        (torch.tensor([[0, 1]]), torch.tensor([[5.0, 1.0]]), r"got \[5\]"),
    ],
)
def test_confusion_matrix_refuses_bad_input(pred, target, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(pred, target, 3)


@pytest.mark.parametrize(("c", "wrong_channels"), [(2, 2), (3, 1)], ids=TASKS)
def test_the_meter_refuses_no_data_logits_of_another_task_and_all_ignored_data(c, wrong_channels):
    with pytest.raises(ValueError, match="before any update"):
        ConfusionMeter(c).compute()
    channels = 1 if c == 2 else c
    with pytest.raises(ValueError, match=rf"expected logits \(N, {channels}, H, W\)"):
        ConfusionMeter(c).update(torch.zeros(1, wrong_channels, 2, 2), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match=rf"class indices must be in 0\.\.{c - 1}"):
        ConfusionMeter(c).update(torch.zeros(1, channels, 1, 2), torch.tensor([[[[0, c]]]]))
    # As many pixels but another size: pixels are never paired by their flat index.
    with pytest.raises(ValueError, match="differ in shape"):
        ConfusionMeter(c).update(torch.zeros(1, channels, 2, 4), torch.zeros(1, 1, 4, 2, dtype=torch.long))
    all_ignored = ConfusionMeter(c)
    all_ignored.update(torch.zeros(1, channels, 2, 2), torch.full((1, 1, 2, 2), IGNORE))
    with pytest.raises(ValueError, match="counts no pixel"):
        all_ignored.compute()


def test_bad_class_counts_and_matrices_are_refused():
    with pytest.raises(ValueError, match="num_classes must be in 1..255"):
        confusion_matrix(torch.zeros(1, 2), torch.zeros(1, 2), 256)
    with pytest.raises(ValueError, match="C x C"):
        class_scores(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="counts no pixel"):
        class_scores(torch.zeros(3, 3, dtype=torch.long))
