"""Multi-class scoring (C logits, argmax): per-class IoU from summed confusion matrices, native vs image size,
the per-image and per-breed tables."""

import math

import numpy as np
import pytest

from pipeline.data.classes import Classes
from pipeline.data.masks import IGNORE, LABELS, PackedMasks
from pipeline.evaluate.inference import native_labels
from pipeline.evaluate.multiclass import (
    ClassScorer,
    class_details,
    class_headline,
    class_per_breed_table,
    class_per_image_table,
    per_image_mdice,
    score_classes,
)

CLASSES = Classes(("background", "pet", "boundary"))

# A 3x4 photo: truth and the prediction the logits below give at that size ((1, 3) is ignored, and
# predicted class 1 there, which must count nowhere).
TRUTH = np.array([[0, 0, 1, 1], [0, 2, 1, IGNORE], [2, 2, 1, 0]], np.uint8)
PRED = np.array([[0, 1, 1, 2], [0, 2, 2, 1], [2, 0, 1, 0]], np.uint8)


def _one_hot_logits(rows: np.ndarray, classes: int = 3) -> np.ndarray:
    """float32 (C, H, W): 10 for each pixel's class in ``rows`` (H, W), 0 elsewhere."""
    return (10.0 * (np.arange(classes)[:, None, None] == rows[None])).astype(np.float32)


def _hand_case():
    """One image: logits (1, 3, 4, 4) whose rows are PRED's rows 0, 1, 1, 2, and at-size truth likewise.

    Resized to 3 rows (bilinear, align_corners=False), output rows sample source rows 0.17, 1.5 and 2.83:
    0.83·r0 + 0.17·r1, 0.5·r1 + 0.5·r2, 0.17·r2 + 0.83·r3, so with r1 = r2 the argmax is PRED exactly;
    the width (4 → 4) is the identity.
    """
    rows = [0, 1, 1, 2]
    logits = _one_hot_logits(PRED[rows])[None]
    at_size = TRUTH[rows][None]
    return logits, at_size, PackedMasks.pack([TRUTH], LABELS)


def test_native_labels_resize_logits_then_take_the_argmax():
    logits, _, _ = _hand_case()
    np.testing.assert_array_equal(native_labels(logits[0], 3, 4), PRED)
    # Same size: the identity, so the argmax of the logits themselves; a tie goes to the lower class.
    tie = np.zeros((3, 2, 2), np.float32)
    tie[2, 0, 0] = 1.0
    np.testing.assert_array_equal(native_labels(tie, 2, 2), [[2, 0], [0, 0]])


def test_per_class_iou_of_a_hand_built_3x4_case():
    # Pairs (true, predicted) over the 11 counted pixels, rows true class, columns predicted:
    #   true 0: 0 0 0 | 1      → [3, 1, 0]
    #   true 1: 1 1 | 2 2      → [0, 2, 2]
    #   true 2: 2 2 | 0        → [1, 0, 2]
    # class 0: TP 3, FP 1, FN 1 → IoU 3/5, Dice 6/8; class 1: TP 2, FP 1, FN 2 → 2/5, 4/7;
    # class 2: TP 2, FP 2, FN 1 → 2/5, 4/7.
    logits, at_size, native = _hand_case()
    scored = score_classes(logits, at_size, native, 3)
    np.testing.assert_array_equal(scored.native[0], [[3, 1, 0], [0, 2, 2], [1, 0, 2]])
    head = class_headline(scored)
    assert head["miou"] == pytest.approx((3 / 5 + 2 / 5 + 2 / 5) / 3)
    assert head["dice"] == pytest.approx((6 / 8 + 4 / 7 + 4 / 7) / 3)
    assert head["dice_per_image"] == pytest.approx(head["dice"])  # one image
    assert head["pixel_accuracy"] == pytest.approx(7 / 11)
    details = class_details(scored, CLASSES, ["cat"])
    assert details["per_class"] == {
        "background": {"iou": pytest.approx(3 / 5), "dice": pytest.approx(6 / 8), "pixels": 4},
        "pet": {"iou": pytest.approx(2 / 5), "dice": pytest.approx(4 / 7), "pixels": 4},
        "boundary": {"iou": pytest.approx(2 / 5), "dice": pytest.approx(4 / 7), "pixels": 3},
    }
    assert details["miou_per_image"] == pytest.approx(7 / 15) and details["images"] == 1
    np.testing.assert_array_equal(scored.predictions[0], PRED)
    assert scored.predictions.depth == LABELS


def test_image_size_counts_the_cache_masks_not_the_native_ones():
    # At 4x4 the truth and prediction are the 3x4 ones with row 1 twice: row 1's pairs (0, 0), (2, 2),
    # (1, 2) (and its ignored pixel) count once more. Class 0: TP 4, FP 1, FN 1 → 4/6; class 1: TP 2,
    # FP 1, FN 3 → 2/6; class 2: TP 3, FP 3, FN 1 → 3/7.
    logits, at_size, native = _hand_case()
    scored = score_classes(logits, at_size, native, 3)
    np.testing.assert_array_equal(scored.at_size[0], [[4, 1, 0], [0, 2, 3], [1, 0, 3]])
    assert class_headline(scored)["miou_at_image_size"] == pytest.approx((4 / 6 + 2 / 6 + 3 / 7) / 3)


def test_an_absent_class_is_null_and_left_out_of_the_means():
    truth = np.array([[0, 0], [1, 1]], np.uint8)
    logits = _one_hot_logits(truth)[None]  # perfect, and class 2 neither true nor predicted
    scored = score_classes(logits, truth[None], PackedMasks.pack([truth], LABELS), 3)
    assert class_headline(scored)["miou"] == 1.0
    assert class_details(scored, CLASSES, ["dog"])["per_class"]["boundary"] == {"iou": None, "dice": None, "pixels": 0}


def _three_images():
    """Three 2x2 images, species cat, cat, dog: one perfect, one half right, one all ignored."""
    truths = [np.array([[0, 1], [2, 2]]), np.array([[1, 1], [0, 0]]), np.full((2, 2), IGNORE)]
    preds = [np.array([[0, 1], [2, 2]]), np.array([[1, 0], [0, 1]]), np.array([[0, 1], [2, 0]])]
    truths = [t.astype(np.uint8) for t in truths]
    logits = np.stack([_one_hot_logits(p) for p in preds])
    return score_classes(logits, np.stack(truths), PackedMasks.pack(truths, LABELS), 3)


def test_per_image_table_miou_and_counts():
    scored = _three_images()
    table = class_per_image_table(scored, CLASSES, ["a_1", "a_2", "b_1"], ["a", "a", "b"], ["cat", "cat", "dog"])
    counts = [f"{kind}_{name}" for name in CLASSES.names for kind in ("tp", "fp", "fn")]
    assert list(table.columns) == ["stem", "breed", "species", "width", "height", "miou", "dice", *counts]
    # Image 2: class 0 TP 1, FP 1, FN 1 → 1/3; class 1 likewise → 1/3; class 2 absent. Image 3: all ignored.
    assert table["miou"].tolist()[:2] == pytest.approx([1.0, 1 / 3])
    assert math.isnan(table["miou"][2]) and math.isnan(table["dice"][2])
    assert table["dice"].tolist()[:2] == pytest.approx([1.0, 1 / 2])
    assert table[["tp_background", "fp_background", "fn_background"]].values.tolist() == [[1, 0, 0], [1, 1, 1], [0] * 3]
    assert table[["tp_boundary", "fp_boundary", "fn_boundary"]].values.tolist() == [[2, 0, 0], [0, 0, 0], [0] * 3]
    # The all-ignored image is left out of the means over images, not counted as 0 or 1.
    details = class_details(scored, CLASSES, ["cat", "cat", "dog"])
    assert details["miou_per_image"] == pytest.approx((1 + 1 / 3) / 2)
    assert class_headline(scored)["dice_per_image"] == pytest.approx((1 + 1 / 2) / 2)
    assert details["species"]["dog"] == {"miou": None, "miou_per_image": None, "images": 1}
    # Cat, summed: class 0 TP 2, FP 1, FN 1 → 2/4; class 1 TP 2, FP 1, FN 1 → 2/4; class 2 TP 2 → 1.
    assert details["species"]["cat"]["miou"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)

    breeds = class_per_breed_table(scored, table)
    assert list(breeds.columns) == ["breed", "species", "images", "miou", "miou_per_image"]
    assert breeds["breed"].tolist() == ["a", "b"]  # NaN sorts last
    assert breeds["miou"][0] == pytest.approx(details["species"]["cat"]["miou"])
    assert breeds["miou_per_image"][0] == pytest.approx((1 + 1 / 3) / 2) and math.isnan(breeds["miou"][1])


def test_per_image_mdice_by_hand():
    matrices = np.array([[[3, 1, 0], [0, 2, 2], [1, 0, 2]], [[0] * 3] * 3])
    dice = per_image_mdice(matrices)
    assert dice[0] == pytest.approx((6 / 8 + 4 / 7 + 4 / 7) / 3) and math.isnan(dice[1])


def test_batch_by_batch_equals_the_whole_split_at_once(tmp_path):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (5, 4, 8, 8)).astype(np.float32)
    masks = rng.integers(0, 4, (5, 8, 8)).astype(np.uint8)
    masks[:, 0, 0] = IGNORE
    np.save(tmp_path / "masks.npy", masks)
    mapped = np.load(tmp_path / "masks.npy", mmap_mode="r")  # the cache is a read-only memory map
    shapes = rng.integers(5, 16, (5, 2))
    native = PackedMasks.pack([rng.integers(0, 4, tuple(s)).astype(np.uint8) for s in shapes], LABELS)
    whole = score_classes(logits, masks, native, 4)
    scorer = ClassScorer(mapped, native, 4)
    for start, stop in ((0, 2), (2, 5)):
        scorer.add(logits[start:stop])
    batched = scorer.result()
    np.testing.assert_array_equal(batched.native, whole.native)
    np.testing.assert_array_equal(batched.at_size, whole.at_size)
    np.testing.assert_array_equal(batched.predictions.bits, whole.predictions.bits)
    assert whole.at_size.sum() == 5 * 63 and whole.native.sum() == shapes.prod(1).sum()


def test_scorer_refuses_what_does_not_fit():
    native = PackedMasks.pack([np.zeros((4, 4), np.uint8)], LABELS)
    with pytest.raises(ValueError, match="depth 8"):
        ClassScorer(np.zeros((1, 4, 4), np.uint8), PackedMasks.pack([np.zeros((4, 4))]), 3)
    with pytest.raises(ValueError, match="2 masks, 1 native masks"):
        ClassScorer(np.zeros((2, 4, 4), np.uint8), native, 3)
    scorer = ClassScorer(np.zeros((1, 4, 4), np.uint8), native, 3)
    with pytest.raises(ValueError, match=r"expected logits \(B, 3, S, S\)"):
        scorer.add(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="0 logits, 1 masks"):
        scorer.result()
    with pytest.raises(ValueError, match="class indices must be in 0..2"):
        ClassScorer(np.full((1, 4, 4), 3, np.uint8), native, 3).add(np.zeros((1, 3, 4, 4), np.float32))
