"""Behaviour the mutation run (docs/mutation.md) found untested in pipeline/evaluate/metrics.py."""

import pytest
import torch

from pipeline.data.masks import IGNORE
from pipeline.evaluate.metrics import SegmentationMeter, dice_from_counts, iou_from_counts


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
