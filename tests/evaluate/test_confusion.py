"""Multi-class metrics (pipeline/evaluate/confusion.py): the per-image C×C confusion matrices, per-class
IoU/Dice and their means over the present classes, per-image mIoU and the dataset-level meter, with
ignored pixels (255) counted nowhere."""

import json
import math

import numpy as np
import pytest
import torch

from pipeline.data.masks import IGNORE
from pipeline.evaluate.confusion import ConfusionMeter, class_scores, confusion_matrix, per_image_miou
from pipeline.evaluate.metrics import confusion_counts, iou_from_counts

# One 3x4 image, 3 classes.
TRUTH = [[0, 0, 1, 1], [0, 2, 2, 1], [2, 2, 2, 0]]
PRED = [[0, 1, 1, 1], [0, 2, 1, 1], [2, 2, 0, 2]]
# Rows true, columns predicted:     TP  FP (column - TP)  FN (row - TP)
MATRIX = [[2, 1, 1], [0, 3, 0], [1, 1, 3]]  # class 0: 2, 1, 2; class 1: 3, 2, 0; class 2: 3, 1, 2


def _image(rows, dtype=torch.int64):
    return torch.tensor(rows, dtype=dtype)[None]


def test_hand_computed_3x4_image():
    matrix = confusion_matrix(_image(PRED), _image(TRUTH), 3)
    assert matrix.dtype == torch.int64 and matrix.tolist() == [MATRIX]
    scores = class_scores(matrix[0])
    # IoU = TP / (TP + FP + FN): 2/(2+1+2) = 2/5, 3/(3+2+0) = 3/5, 3/(3+1+2) = 1/2.
    assert scores["iou"] == [2 / 5, 3 / 5, 1 / 2]
    # Dice = 2TP / (2TP + FP + FN): 4/(4+1+2) = 4/7, 6/(6+2+0) = 3/4, 6/(6+1+2) = 2/3.
    assert scores["dice"] == [4 / 7, 3 / 4, 2 / 3]
    assert scores["miou"] == pytest.approx((2 / 5 + 3 / 5 + 1 / 2) / 3)  # = 1/2
    assert scores["mdice"] == pytest.approx((4 / 7 + 3 / 4 + 2 / 3) / 3)
    assert scores["pixel_accuracy"] == 8 / 12  # the diagonal: 2 + 3 + 3 of 12 pixels
    assert scores["pixels"] == [4, 3, 5] and scores["present"] == [True, True, True]


def test_ignored_pixels_are_counted_nowhere_for_any_target_dtype():
    # Ignore the first column (truth 0, 0, 2, each predicted right): two (0, 0) and one (2, 2) fewer.
    truth = [[IGNORE, 0, 1, 1], [IGNORE, 2, 2, 1], [IGNORE, 2, 2, 0]]
    expected = [[[0, 1, 1], [0, 3, 0], [1, 1, 2]]]
    for dtype in (torch.uint8, torch.int64, torch.float32):
        assert confusion_matrix(_image(PRED), _image(truth, dtype), 3).tolist() == expected
    scores = class_scores(torch.tensor(expected[0]))
    assert scores["pixel_accuracy"] == 5 / 9  # 9 counted pixels, not 12
    assert scores["pixels"] == [2, 3, 4]


def test_matrix_equals_a_numpy_reference_on_random_data():
    rng = np.random.default_rng(0)
    n, c = 4, 5
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


def _random_batch(seed, n=6, c=4, size=8):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, size, size, generator=generator)
    target = torch.randint(0, c, (n, 1, size, size), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.1] = IGNORE
    return logits, target


def test_meter_is_the_same_for_one_pass_and_two_halves():
    logits, target = _random_batch(1)
    whole, halves = ConfusionMeter(4), ConfusionMeter(4)
    whole.update(logits, target)
    halves.update(logits[:2], target[:2])
    halves.update(logits[2:], target[2:])
    assert halves.compute() == whole.compute()
    assert whole.compute()["num_images"] == 6


def test_meter_sums_counts_over_the_dataset_not_batch_averages():
    # Batch 1: the hand-computed image (mIoU 1/2). Batch 2: three pixels of class 0, all right.
    meter = ConfusionMeter(3)
    meter.add(_image(PRED), _image(TRUTH))
    meter.add(torch.zeros(1, 1, 3, dtype=torch.long), torch.zeros(1, 1, 3, dtype=torch.long))
    # Summed: class 0 has TP 2 + 3 = 5, FP 1, FN 2 → 5/8; classes 1 and 2 as before.
    result = meter.compute()
    assert result["iou"] == [5 / 8, 3 / 5, 1 / 2]
    assert result["miou"] == pytest.approx((5 / 8 + 3 / 5 + 1 / 2) / 3)
    assert result["pixel_accuracy"] == 11 / 15
    assert result["miou_per_image"] == pytest.approx((1 / 2 + 1) / 2)  # batch 2's image: only class 0, IoU 1


def test_update_predicts_the_argmax_class():
    logits = torch.tensor([[[[3.0, 0.0]], [[1.0, 0.0]], [[0.0, 2.0]]]])  # (1, 3, 1, 2): classes 0 and 2
    meter = ConfusionMeter(3)
    meter.update(logits, torch.tensor([[[[0, 1]]]]))
    assert meter.matrices[0].tolist() == [[[1, 0, 0], [0, 0, 1], [0, 0, 0]]]


def test_absent_classes_are_none_and_left_out_of_the_means_and_the_result_is_json():
    # 4 classes, class 3 neither true nor predicted anywhere: mIoU over classes 0..2 only.
    meter = ConfusionMeter(4)
    meter.add(_image(PRED), _image(TRUTH))
    result = meter.compute()
    assert result["iou"] == [2 / 5, 3 / 5, 1 / 2, None] and result["dice"][3] is None
    assert result["present"] == [True, True, True, False] and result["pixels"][3] == 0
    assert result["miou"] == pytest.approx(1 / 2)
    json.dumps(result, allow_nan=False)
    # A class only predicted (false alarms) is present, with IoU 0.
    scores = class_scores(torch.tensor([[1, 1], [0, 0]]))
    assert scores["iou"] == [1 / 2, 0.0] and scores["miou"] == 1 / 4


def test_per_image_miou_is_nan_for_an_image_with_no_counted_pixel_and_left_out_of_the_mean():
    pred = torch.stack([_image(PRED)[0], _image(TRUTH)[0], _image(PRED)[0]])
    truth = torch.stack([_image(TRUTH)[0], _image(TRUTH)[0], torch.full((3, 4), IGNORE)])
    per_image = per_image_miou(confusion_matrix(pred, truth, 3))
    assert per_image.dtype == torch.float64
    assert per_image[0].item() == pytest.approx(1 / 2) and per_image[1].item() == 1.0
    assert math.isnan(per_image[2].item())
    meter = ConfusionMeter(3)
    meter.add(pred, truth)
    result = meter.compute()
    assert result["miou_per_image"] == pytest.approx((1 / 2 + 1) / 2) and result["num_images"] == 3


def test_two_classes_give_the_binary_iou_of_the_foreground():
    generator = torch.Generator().manual_seed(2)
    pred = torch.randint(0, 2, (3, 1, 9, 9), generator=generator)
    target = torch.randint(0, 2, (3, 1, 9, 9), generator=generator)
    target[torch.rand(target.shape, generator=generator) < 0.15] = IGNORE
    tp, fp, fn, _ = confusion_counts(pred, target).sum(0)
    scores = class_scores(confusion_matrix(pred, target, 2).sum(0))
    assert scores["iou"][1] == float(iou_from_counts(tp, fp, fn))


def test_agrees_with_torchmetrics_on_the_present_classes():
    import torchmetrics  # a dev extra: fails rather than skips where missing; imported by this test only

    logits, target = _random_batch(3, c=5)
    target[target == 4] = 0  # class 4 absent from the truth, perhaps predicted
    meter = ConfusionMeter(5)
    meter.update(logits, target)
    ours = meter.compute()
    metric = torchmetrics.classification.MulticlassJaccardIndex(num_classes=5, average=None, ignore_index=IGNORE)
    theirs = metric(logits.argmax(1), target[:, 0]).tolist()
    for iou, other, present in zip(ours["iou"], theirs, ours["present"], strict=True):
        if present:
            assert iou == pytest.approx(other, rel=1e-6)


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


def test_bad_class_counts_and_empty_data_are_refused():
    with pytest.raises(ValueError, match="num_classes must be in 1..255"):
        confusion_matrix(torch.zeros(1, 2), torch.zeros(1, 2), 256)
    with pytest.raises(ValueError, match="before any update"):
        ConfusionMeter(3).compute()
    with pytest.raises(ValueError, match=r"expected logits \(N, 3, H, W\)"):
        ConfusionMeter(3).update(torch.zeros(1, 2, 2, 2), torch.zeros(1, 1, 2, 2))
    all_ignored = ConfusionMeter(3)
    all_ignored.add(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), IGNORE))
    with pytest.raises(ValueError, match="counts no pixel"):
        all_ignored.compute()
    with pytest.raises(ValueError, match="C x C"):
        class_scores(torch.zeros(2, 3, dtype=torch.long))
