import math

import pytest
import torch

from pipeline.losses import LOSSES, bce_dice_loss, bce_loss, dice_loss
from pipeline.metrics import SegmentationMeter, confusion_counts, dice_from_counts, iou_from_counts


def test_dice_loss_matches_hand_computation():
    # p = sigmoid(0) = 0.5 everywhere on 4 pixels, target has 2 ones:
    # (2 * 1.0 + 1) / (2.0 + 2 + 1) = 3/5 → loss 0.4
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    assert dice_loss(logits, target).item() == pytest.approx(0.4)


def test_dice_loss_is_near_zero_for_confident_correct_logits_and_near_one_for_wrong():
    target = torch.tensor([[[[1.0, 0.0], [1.0, 0.0]]]])
    good = (target * 2 - 1) * 20
    assert dice_loss(good, target).item() < 1e-3
    assert dice_loss(-good, target).item() > 0.6


def test_bce_matches_hand_computation():
    logits = torch.tensor([[[[2.0, -1.0]]]])
    target = torch.tensor([[[[1.0, 1.0]]]])
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(1.0))) / 2
    assert bce_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_bce_dice_is_the_sum_and_registry_names():
    torch.manual_seed(0)
    logits, target = torch.randn(2, 1, 4, 4), (torch.rand(2, 1, 4, 4) > 0.5).float()
    assert bce_dice_loss(logits, target).item() == pytest.approx(
        bce_loss(logits, target).item() + dice_loss(logits, target).item()
    )
    assert set(LOSSES) == {"bce_dice", "dice", "bce"}


def test_losses_backpropagate():
    logits = torch.zeros(1, 1, 2, 2, requires_grad=True)
    bce_dice_loss(logits, torch.ones(1, 1, 2, 2)).backward()
    assert (logits.grad < 0).all()  # raising every logit lowers the loss


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
