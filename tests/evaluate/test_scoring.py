"""Native-resolution scoring, threshold choice on valid, breakdowns, and test-time augmentation."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.core.errors import UserError
from pipeline.data.decode import trimap_to_mask
from pipeline.data.layout import breed_of, read_species
from pipeline.data.masks import IGNORE, PackedMasks
from pipeline.evaluate.inference import native_probabilities, tta_forward
from pipeline.evaluate.scoring import (
    Scorer,
    ThresholdSearch,
    choose_threshold,
    details,
    headline,
    per_breed_table,
    per_image_table,
    score,
)
from pipeline.report.overlays import FP, TP, error_overlay


def _summary(scored, species):
    """The metrics file and its details file of one evaluation, as one dict."""
    return {**headline(scored), **details(scored, species)}


def _logits_for(probabilities) -> np.ndarray:
    p = np.asarray(probabilities, np.float64)
    return np.log(p / (1 - p)).astype(np.float32)


def test_native_dice_on_a_hand_built_3x5_trimap():
    # Logits at "image size" 2x2: left column +10, right column -30. Bilinear (align_corners=False)
    # to width 5 samples source x = (x + 0.5) * 2/5 - 0.5 = -0.3, 0.1, 0.5, 0.9, 1.3 (clamped to
    # [0, 1]), i.e. logits 10, 6, -10, -26, -30 in every row: columns 0 and 1 are predicted pet.
    logits = np.array([[[10.0, -30.0], [10.0, -30.0]]], np.float32)
    trimap = np.array([[1, 1, 3, 2, 2], [1, 3, 2, 2, 2], [2, 2, 2, 2, 2]], np.uint8)
    truth = trimap_to_mask(trimap, "pet")  # pet where 1 or 3
    # pred rows [1 1 0 0 0] x3 vs truth [1 1 1 0 0], [1 1 0 0 0], [0 0 0 0 0]: TP 4, FP 2, FN 1.
    at_size = np.array([[[1, 0], [1, 0]]], np.uint8)
    scored = score(logits, at_size, PackedMasks.pack([truth]), 0.5)
    np.testing.assert_array_equal(scored.native[0], [4, 2, 1, 8])
    assert _summary(scored, ["cat"])["dice"] == pytest.approx(8 / 11)
    assert _summary(scored, ["cat"])["iou"] == pytest.approx(4 / 7)
    assert _summary(scored, ["cat"])["pixel_accuracy"] == pytest.approx(12 / 15)
    np.testing.assert_array_equal(scored.predictions[0], np.repeat([[1, 1, 0, 0, 0]], 3, axis=0))
    # At image size the same logits are perfect against the 2x2 mask.
    assert _summary(scored, ["cat"])["dice_at_image_size"] == 1.0


def test_native_scores_leave_the_ignored_band_out():
    # The 3x5 trimap and logits above under boundary: ignore. Prediction rows [1 1 0 0 0] x3 against
    # pet [1 1 . 0 0], [1 . 0 0 0], [0 0 0 0 0] ("." ignored, (1, 1) predicted pet): TP 3, FP 2, FN 0,
    # TN 8 over 13 counted pixels.
    logits = np.array([[[10.0, -30.0], [10.0, -30.0]]], np.float32)
    trimap = np.array([[1, 1, 3, 2, 2], [1, 3, 2, 2, 2], [2, 2, 2, 2, 2]], np.uint8)
    native, ignore = PackedMasks.pack([trimap == 1]), PackedMasks.pack([trimap == 3])
    at_size = np.array([[[1, IGNORE], [1, 0]]], np.uint8)  # at 2x2: TP 2, the ignored pixel, TN 1
    scored = score(logits, at_size, native, 0.5, ignore)
    np.testing.assert_array_equal(scored.native[0], [3, 2, 0, 8])
    np.testing.assert_array_equal(scored.at_size[0], [2, 0, 0, 1])
    s = _summary(scored, ["cat"])
    assert s["dice"] == pytest.approx(6 / 8) and s["iou"] == pytest.approx(3 / 5)
    assert s["pixel_accuracy"] == pytest.approx(11 / 13)
    table = per_image_table(scored, ["a_1"], ["a"], ["cat"], native)
    assert table["pet_fraction"].tolist() == pytest.approx([3 / 13])
    # Without the ignore masks the band is background: (1, 1) becomes a false positive.
    np.testing.assert_array_equal(score(logits, at_size, native, 0.5).native[0], [3, 3, 0, 9])
    with pytest.raises(ValueError, match="native_ignore"):
        score(logits, at_size, native, 0.5, PackedMasks.pack([np.zeros((3, 4))]))


def test_choose_threshold_leaves_ignored_pixels_out():
    # Probabilities 0.22, 0.33, 0.67, 0.78; pet only at the last pixel. Counting all four pixels,
    # only t in [0.67, 0.78) is perfect (→ 0.70); with the middle two ignored, any t in [0.22, 0.78)
    # is, and the tie goes to 0.50.
    logits = _logits_for([[[0.22, 0.33, 0.67, 0.78]]])
    native = PackedMasks.pack([np.array([[0, 0, 0, 1]], np.uint8)])
    ignore = PackedMasks.pack([np.array([[0, 1, 1, 0]], np.uint8)])
    assert choose_threshold(logits, native) == 0.70
    assert choose_threshold(logits, native, native_ignore=ignore) == 0.50


def test_error_overlay_leaves_ignored_pixels_untinted():
    image = np.full((2, 2, 3), 100, np.uint8)
    truth = np.array([[1, IGNORE], [0, IGNORE]], np.uint8)
    pred = np.array([[1, 1], [1, 0]], np.uint8)
    expected = np.full((2, 2, 3), 100, np.uint8)
    expected[0, 0], expected[1, 0] = np.round(50 + TP / 2), np.round(50 + FP / 2)
    np.testing.assert_array_equal(error_overlay(image, pred, truth, alpha=0.5), expected)


def test_native_equals_at_size_when_the_photo_is_already_image_size():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (5, 32, 32)).astype(np.float32)
    masks = (rng.random((5, 32, 32)) > 0.6).astype(np.uint8)
    s = _summary(score(logits, masks, PackedMasks.pack(list(masks)), 0.4), ["cat"] * 5)
    assert s["dice"] == s["dice_at_image_size"]
    assert s["iou"] == s["at_image_size"]["iou"]
    assert s["dice_per_image"] == s["at_image_size"]["dice_per_image"]
    assert 0.3 < s["dice"] < 0.7  # a real, non-trivial score


def test_both_empty_scores_one_and_one_empty_scores_zero():
    empty, full = np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)
    logits = np.stack([np.full((4, 4), -9.0), np.full((4, 4), 9.0), np.full((4, 4), -9.0)]).astype(np.float32)
    native = PackedMasks.pack([empty, empty, full])  # none/none, pet predicted on empty, none on a pet
    scored = score(logits, np.stack([empty, empty, full]), native, 0.5)
    table = per_image_table(scored, ["a_1", "b_1", "c_1"], ["a", "b", "c"], ["cat", "dog", "dog"], native)
    assert table["dice"].tolist() == [1.0, 0.0, 0.0]
    assert table["iou"].tolist() == [1.0, 0.0, 0.0]
    assert table["pet_fraction"].tolist() == [0.0, 0.0, 1.0]
    s = _summary(scored, ["cat", "dog", "dog"])
    assert s["dice_per_image"] == pytest.approx(1 / 3) and s["dice_per_image_median"] == 0.0
    assert s["dice"] == 0.0  # dataset level: no TP anywhere


def test_species_and_breed_scores_sum_counts_within_the_group():
    # Three images of 1x4 pixels; the breed "x" has a perfect small pet and a half-found big one.
    truths = [np.array([[1, 0, 0, 0]]), np.array([[1, 1, 1, 1]]), np.array([[1, 1, 0, 0]])]
    preds = [np.array([[1, 0, 0, 0]]), np.array([[1, 1, 0, 0]]), np.array([[0, 0, 1, 1]])]
    logits = np.stack([np.where(p, 5.0, -5.0) for p in preds]).astype(np.float32)
    native = PackedMasks.pack([t.astype(np.uint8) for t in truths])
    scored = score(logits, np.stack(truths).astype(np.uint8), native, 0.5)
    stems, breeds, species = ["x_1", "x_2", "y_1"], ["x", "x", "y"], ["cat", "cat", "unknown"]
    table = per_image_table(scored, stems, breeds, species, native)
    breeds_table = per_breed_table(scored, table)
    assert list(breeds_table.columns) == ["breed", "species", "images", "dice", "dice_per_image"]
    assert breeds_table["breed"].tolist() == ["y", "x"]  # worst first
    x = breeds_table.set_index("breed").loc["x"]
    # Summed counts for x: TP 1 + 2, FP 0, FN 0 + 2 → Dice 6/8, not the mean of 1 and 2/3.
    assert x["dice"] == pytest.approx(6 / 8) and x["dice_per_image"] == pytest.approx((1 + 2 / 3) / 2)
    assert x["images"] == 2 and x["species"] == "cat"
    s = _summary(scored, species)
    assert set(s["species"]) == {"cat", "unknown"}
    assert s["species"]["cat"] == {"dice": pytest.approx(6 / 8), "dice_per_image": pytest.approx(5 / 6), "images": 2}
    assert s["species"]["unknown"]["dice"] == 0.0 and s["images"] == 3


def test_per_image_table_columns_and_sizes():
    native = PackedMasks.pack([np.ones((3, 5), np.uint8), np.zeros((7, 2), np.uint8)])
    logits = np.zeros((2, 4, 4), np.float32) + 1
    scored = score(logits, np.ones((2, 4, 4), np.uint8), native, 0.5)
    table = per_image_table(scored, ["A_1", "b_2"], ["A", "b"], ["cat", "dog"], native)
    columns = ["stem", "breed", "species", "width", "height", "pet_fraction", "dice", "iou", "tp", "fp", "fn"]
    assert list(table.columns) == columns
    assert table[["width", "height"]].values.tolist() == [[5, 3], [2, 7]]
    # Every pixel predicted pet: image 1's 15 pet pixels are true positives, image 2's 14 false ones.
    assert table[["tp", "fp", "fn"]].values.tolist() == [[15, 0, 0], [0, 14, 0]]


def test_choose_threshold_follows_the_split_it_is_given():
    # One image of four pixels with probabilities 0.22, 0.33, 0.67, 0.78 (off the 0.05 grid).
    logits = _logits_for([[[0.22, 0.33, 0.67, 0.78]]])
    valid_truth = PackedMasks.pack([np.array([[0, 1, 1, 1]], np.uint8)])  # perfect for t in [0.22, 0.33)
    test_truth = PackedMasks.pack([np.array([[0, 0, 0, 1]], np.uint8)])  # perfect for t in [0.67, 0.78)
    # Ties go to the threshold nearest 0.5: 0.30 of {0.25, 0.30}, 0.70 of {0.70, 0.75}.
    assert choose_threshold(logits, valid_truth) == 0.30
    assert choose_threshold(logits, test_truth) == 0.70


def test_native_probabilities_resize_logits_not_masks():
    logits = np.array([[4.0, -4.0]], np.float32)
    probs = native_probabilities(logits, 1, 4)
    assert probs.shape == (1, 4)
    # Bilinear on logits: x = 4, 0, 0... at width 4 sources -0.25, 0.25, 0.75, 1.25 → 4, 2, -2, -4.
    np.testing.assert_allclose(probs[0], 1 / (1 + np.exp(-np.array([4.0, 2.0, -2.0, -4.0]))), rtol=1e-6)


class _LeftEdge(nn.Module):
    """A model that is not mirror-symmetric: a horizontal difference filter."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 1, (1, 3), padding=(0, 1), bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.weight[0, :, 0, 0] = 1.0
            self.conv.weight[0, :, 0, 2] = -0.5

    def forward(self, x):
        return self.conv(x)


def test_hflip_tta_averages_the_mirrored_prediction():
    model = _LeftEdge().eval()

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    x = np.random.default_rng(1).normal(size=(2, 3, 4, 6)).astype(np.float32)
    plain, tta = tta_forward(forward, x, "none"), tta_forward(forward, x, "hflip")
    expected = (forward(x) + forward(x[..., ::-1].copy())[..., ::-1]) / 2
    np.testing.assert_allclose(tta, expected, rtol=1e-6)
    assert np.abs(tta - plain).max() > 0.1  # the model is not symmetric, so TTA changes the logits
    # Flip TTA makes the prediction mirror-equivariant.
    np.testing.assert_allclose(tta_forward(forward, x[..., ::-1].copy(), "hflip"), tta[..., ::-1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="tta must be one of none, hflip"):
        tta_forward(forward, x, "vflip")


def test_read_species_and_breed_of(tmp_path):
    list_file = tmp_path / "list.txt"
    list_file.write_text(
        "#Image CLASS-ID SPECIES BREED ID\nAbyssinian_1 1 1 1\nbeagle_12 13 2 3\nodd_1 5 9 1\nshort_1 1\n"
    )
    species = read_species(list_file)
    assert species == {"Abyssinian_1": "cat", "beagle_12": "dog"}
    assert breed_of("american_bulldog_12") == "american_bulldog" and breed_of("Bengal_3") == "Bengal"
    assert breed_of("noindex") == "noindex"


def test_packed_masks_round_trip_different_sizes():
    rng = np.random.default_rng(3)
    masks = [(rng.random(shape) > 0.5).astype(np.uint8) for shape in [(3, 5), (1, 1), (17, 9), (0, 4)]]
    packed = PackedMasks.pack(masks)
    assert len(packed) == 4
    for original, back in zip(masks, (packed[i] for i in range(4)), strict=True):
        np.testing.assert_array_equal(original, back)
    again = PackedMasks.from_arrays(packed.to_arrays("m"), "m")
    np.testing.assert_array_equal(again[2], masks[2])
    with pytest.raises(ValueError, match="2-D"):
        PackedMasks.pack([np.zeros((2, 2, 2))])
    assert len(PackedMasks.pack([])) == 0


def test_score_refuses_mismatched_counts():
    one = PackedMasks.pack([np.zeros((4, 4))])
    with pytest.raises(ValueError, match="2 logits, 1 masks"):
        score(np.zeros((2, 4, 4), np.float32), np.zeros((1, 4, 4), np.uint8), one, 0.5)
    with pytest.raises(ValueError, match="2 masks, 1 native masks"):
        Scorer(np.zeros((2, 4, 4), np.uint8), one, 0.5)
    scorer = Scorer(np.zeros((2, 4, 4), np.uint8), PackedMasks.pack([np.zeros((4, 4))] * 2), 0.5)
    scorer.add(np.zeros((1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="1 logits, 2 masks"):
        scorer.result()
    search = ThresholdSearch(one)
    with pytest.raises(ValueError, match="0 logits, 1 native masks"):
        search.best()
    with pytest.raises(ValueError, match="2 logits, 1 native masks"):
        search.add(np.zeros((2, 4, 4), np.float32))


def _random_split(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, size, size)).astype(np.float32)
    masks = (rng.random((n, size, size)) < 0.4).astype(np.uint8)
    masks[:, 0, 0] = IGNORE
    shapes = rng.integers(size - 3, 2 * size, (n, 2))
    native = PackedMasks.pack([(rng.random(tuple(s)) < 0.4).astype(np.uint8) for s in shapes])
    ignore = PackedMasks.pack([(rng.random(tuple(s)) < 0.1).astype(np.uint8) for s in shapes])
    return logits, masks, native, ignore


def test_scoring_batch_by_batch_equals_scoring_the_whole_split_at_once(tmp_path):
    logits, masks, native, ignore = _random_split(7, 8)
    np.save(tmp_path / "masks.npy", masks)
    mapped = np.load(tmp_path / "masks.npy", mmap_mode="r")  # the cache is a read-only memory map
    whole = score(logits, masks, native, 0.4, ignore)
    scorer = Scorer(mapped, native, 0.4, ignore)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it wraps a read-only array
        for start, stop in ((0, 3), (3, 4), (4, 7)):  # uneven batches, as the last one is
            scorer.add(logits[start:stop])
    batched = scorer.result()
    np.testing.assert_array_equal(batched.native, whole.native)
    np.testing.assert_array_equal(batched.at_size, whole.at_size)
    for i in range(7):
        np.testing.assert_array_equal(batched.predictions[i], whole.predictions[i])
    assert whole.native[:, :3].sum() > 0 and whole.at_size[:, 0].sum() > 0


def test_threshold_search_batch_by_batch_equals_the_whole_split_at_once():
    logits, _, native, ignore = _random_split(7, 8, seed=1)
    whole = ThresholdSearch(native, native_ignore=ignore)
    whole.add(logits)
    batched = ThresholdSearch(native, native_ignore=ignore)
    for start, stop in ((0, 2), (2, 7)):
        batched.add(logits[start:stop])
    # The TP, FP, FN of every threshold of the grid, summed over all seven images.
    np.testing.assert_array_equal(batched.total, whole.total)
    assert batched.best() == whole.best() == choose_threshold(logits, native, native_ignore=ignore)
    assert whole.total[0, 0] > whole.total[-1, 0] > 0  # a lower threshold finds more pet pixels


def test_read_species_missing_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="list.txt: list file not found; rerun the download stage"):
        read_species(tmp_path / "list.txt")
