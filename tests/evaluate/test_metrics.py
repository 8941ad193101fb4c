"""Segmentation metrics (pipeline/evaluate/metrics.py): confusion counts, Dice and IoU from counts, and
the dataset-level meter, with ignored pixels left out."""

import pytest
import torch

from pipeline.data.masks import IGNORE
from pipeline.evaluate.metrics import SegmentationMeter, confusion_counts, dice_from_counts, iou_from_counts


def test_confusion_counts_per_image():
    pred = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    target = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]])
    assert confusion_counts(pred, target).tolist() == [[1, 1, 1, 1], [0, 0, 1, 3]]


def test_dice_and_iou_from_counts_including_empty_masks():
    tp, fp, fn = torch.tensor([3, 0, 0]), torch.tensor([1, 0, 2]), torch.tensor([2, 0, 0])
    assert dice_from_counts(tp, fp, fn).tolist() == pytest.approx([6 / 9, 1.0, 0.0])
    assert iou_from_counts(tp, fp, fn).tolist() == pytest.approx([3 / 6, 1.0, 0.0])


def test_meter_accumulates_counts_over_the_dataset_not_batch_averages():
    # Batch 1: one image, 1 TP 1 FP 0 FN, 2 TN.  Batch 2: one image, 9 TP, 0 FP, 3 FN, 0 TN.
    meter = SegmentationMeter(threshold=0.5)
    meter.update(torch.tensor([[[[5.0, 5.0, -5.0, -5.0]]]]), torch.tensor([[[[1, 0, 0, 0]]]]))
    meter.update(torch.tensor([[[[5.0] * 9 + [-5.0] * 3]]]), torch.tensor([[[[1] * 12]]]))
    result = meter.compute()
    tp, fp, fn = 10, 1, 3
    assert result["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result["iou"] == pytest.approx(tp / (tp + fp + fn))
    tn = 2
    assert result["pixel_accuracy"] == pytest.approx((tp + tn) / 16)
    assert result["dice_per_image"] == pytest.approx((2 / 3 + 18 / 21) / 2)
    assert result["num_images"] == 2
    # The mean of the two batch Dice values would differ: the meter must not compute that.
    assert result["dice"] != pytest.approx((2 / 3 + 18 / 21) / 2)


def test_meter_threshold_applies_to_probabilities():
    logits = torch.tensor([[[[0.5, -0.5]]]])  # probabilities 0.62, 0.38
    target = torch.tensor([[[[1, 0]]]])
    strict = SegmentationMeter(threshold=0.7)
    strict.update(logits, target)
    loose = SegmentationMeter(threshold=0.5)
    loose.update(logits, target)
    assert strict.compute()["dice"] == 0.0
    assert loose.compute()["dice"] == 1.0


def test_meter_refuses_to_compute_without_data():
    with pytest.raises(ValueError, match="before any update"):
        SegmentationMeter().compute()


def test_iou_and_dice_of_one_pixel_images_are_exactly_zero_or_one():
    # Three images with a single counted pixel each: right (TP), a false alarm (FP), a miss (FN).
    tp, fp, fn = torch.tensor([1, 0, 0]), torch.tensor([0, 1, 0]), torch.tensor([0, 0, 1])
    assert iou_from_counts(tp, fp, fn).tolist() == [1.0, 0.0, 0.0]
    assert dice_from_counts(tp, fp, fn).tolist() == [1.0, 0.0, 0.0]


def test_meter_scores_a_one_pixel_pet_found_as_perfect_and_missed_as_zero():
    # A tiny image whose only counted pixel is the pet: found → IoU 1; missed or background
    # predicted pet → IoU 0 (the ignored pixel counts nowhere).
    target = torch.tensor([[[[1, IGNORE]]]])
    found, missed = SegmentationMeter(), SegmentationMeter()
    found.update(torch.tensor([[[[5.0, 5.0]]]]), target)
    missed.update(torch.tensor([[[[-5.0, 5.0]]]]), target)
    assert found.compute()["iou"] == 1.0 and missed.compute()["iou"] == 0.0
    false_alarm = SegmentationMeter()
    false_alarm.update(torch.tensor([[[[5.0, -5.0]]]]), torch.tensor([[[[0, IGNORE]]]]))
    assert false_alarm.compute()["iou"] == 0.0 and false_alarm.compute()["pixel_accuracy"] == 0.0


def test_meter_predicts_pet_only_strictly_above_the_threshold():
    # Logit 0 is probability exactly 0.5: not pet at threshold 0.5, as in the training loop's validation.
    meter = SegmentationMeter(threshold=0.5)
    meter.update(torch.tensor([[[[0.0, 0.0]]]]), torch.tensor([[[[0, 1]]]]))
    tp, fp, fn, tn = 0, 0, 1, 1
    assert meter.compute()["pixel_accuracy"] == pytest.approx((tp + tn) / (tp + fp + fn + tn))
    assert meter.compute()["dice"] == 0.0


# --- the ignore label (255) ---------------------------------------------------------------------


def test_confusion_counts_leave_ignored_pixels_out():
    # 2x3 image, the pixel (0, 2) ignored (predicted pet there, which must not count as FP):
    # pred   [1 1 1]    target [1 0 255]   → (0,0) TP, (0,1) FP, (0,2) nothing,
    #        [0 1 0]           [1 1 0  ]   → (1,0) FN, (1,1) TP, (1,2) TN.
    pred = torch.tensor([[[1, 1, 1], [0, 1, 0]]])
    target = torch.tensor([[[1, 0, IGNORE], [1, 1, 0]]], dtype=torch.uint8)
    assert confusion_counts(pred, target).tolist() == [[2, 1, 1, 1]]
    assert confusion_counts(pred, target.float()).tolist() == [[2, 1, 1, 1]]
    assert confusion_counts(pred.bool(), target.long()).tolist() == [[2, 1, 1, 1]]


def test_meter_ignores_255_in_float_masks_as_the_training_loop_passes_them():
    logits = torch.tensor([[[[5.0, 5.0, 5.0], [-5.0, 5.0, -5.0]]]])
    masks = torch.tensor([[[[1.0, 0.0, 255.0], [1.0, 1.0, 0.0]]]])
    meter = SegmentationMeter()
    meter.update(logits, masks)
    result = meter.compute()
    tp, fp, fn, tn = 2, 1, 1, 1  # as in the confusion-count test above
    assert result["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert result["iou"] == pytest.approx(tp / (tp + fp + fn))
    assert result["pixel_accuracy"] == pytest.approx((tp + tn) / 5)  # 5 counted pixels, not 6
