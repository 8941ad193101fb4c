"""Scoring at the photos' own resolution and at the cache's size for any task (pipeline/evaluate/scoring.py),
the threshold choice of a binary task on valid, logits and label maps from a model (inference.py) with
test-time augmentation, and the species, breeds and packed masks scoring reads."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from pipeline.core.errors import UserError
from pipeline.data.layout import breed_of, read_species
from pipeline.data.masks import IGNORE, LABELS, PackedMasks, target_mask
from pipeline.evaluate.inference import iter_logits, native_labels, predict_logits, prepare, resize_logits, tta_forward
from pipeline.evaluate.scoring import Scorer, ThresholdSearch, choose_threshold, score
from pipeline.evaluate.tables import details, headline, per_image_table, summary

TASKS = ["binary", "4 classes"]


def _logits_for(probabilities) -> np.ndarray:
    p = np.asarray(probabilities, np.float64)
    return np.log(p / (1 - p)).astype(np.float32)


def _one_hot_logits(rows: np.ndarray, classes: int = 3) -> np.ndarray:
    """float32 (C, H, W): 10 for each pixel's class in ``rows`` (H, W), 0 elsewhere."""
    return (10.0 * (np.arange(classes)[:, None, None] == rows[None])).astype(np.float32)


# --- logits to native label maps -----------------------------------------------------------------------


def test_resize_logits_interpolates_logits_bilinearly_keeping_the_channels():
    # Bilinear (align_corners=False) of logits 4, -4 at width 4 samples sources -0.25, 0.25, 0.75, 1.25
    # (clamped to [0, 1]) → 4, 2, -2, -4.
    resized = resize_logits(np.array([[[4.0, -4.0]]], np.float32), 1, 4)
    assert resized.shape == (1, 1, 1, 4) and resized.dtype == torch.float32
    np.testing.assert_allclose(resized[0, 0, 0].numpy(), [4.0, 2.0, -2.0, -4.0], rtol=1e-6)
    # Same size: the identity, every channel kept.
    logits = np.random.default_rng(0).normal(size=(3, 5, 6)).astype(np.float32)
    np.testing.assert_array_equal(resize_logits(logits, 5, 6)[0].numpy(), logits)


# A 3x4 photo of 3 classes and the label map the logits of NATIVE_CASE give at that size.
PRED = np.array([[0, 1, 1, 2], [0, 2, 2, 1], [2, 0, 1, 0]], np.uint8)


@pytest.mark.parametrize(
    ("logits", "size", "threshold", "expected"),
    [
        # One logit resized to 4, 2, -2, -4 (probabilities 0.98, 0.88, 0.12, 0.02), then the threshold.
        (np.array([[[4.0, -4.0]]], np.float32), (1, 4), 0.5, [[1, 1, 0, 0]]),
        (np.array([[[4.0, -4.0]]], np.float32), (1, 4), 0.9, [[1, 0, 0, 0]]),
        (np.array([[[4.0, -4.0]]], np.float32), (1, 4), 0.01, [[1, 1, 1, 1]]),
        # Logits whose rows are PRED's rows 0, 1, 1, 2, resized to 3 rows (bilinear, align_corners=False):
        # output rows sample source rows 0.17, 1.5 and 2.83: 0.83·r0 + 0.17·r1, 0.5·r1 + 0.5·r2,
        # 0.17·r2 + 0.83·r3, so with r1 = r2 the argmax is PRED exactly; the width (4 → 4) is the identity.
        (_one_hot_logits(PRED[[0, 1, 1, 2]]), (3, 4), 0.5, PRED),
        # Same size: the argmax of the logits themselves, a tie to the lower class; no threshold.
        (
            np.where(np.arange(3)[:, None, None] == 2, np.eye(2)[None], 0).astype(np.float32),
            (2, 2),
            0.9,
            [[2, 0], [0, 2]],
        ),
        (np.zeros((3, 2, 2), np.float32), (2, 2), 0.5, [[0, 0], [0, 0]]),
    ],
    ids=["one logit at 0.5", "one logit at 0.9", "one logit at 0.01", "argmax after resize", "argmax", "tie"],
)
def test_native_labels_resize_the_logits_then_label_the_pixels(logits, size, threshold, expected):
    labels = native_labels(logits, *size, threshold)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, expected)


# --- native-resolution scoring of a binary task ----------------------------------------------------------


def test_native_scores_leave_the_ignored_band_out():
    # Logits at "image size" 2x2: left column +10, right column -30. Bilinear to width 5 samples source
    # x = -0.3, 0.1, 0.5, 0.9, 1.3, i.e. logits 10, 6, -10, -26, -30 in every row: columns 0 and 1 are
    # predicted pet. The 3x5 trimap under boundary: ignore: prediction rows [1 1 0 0 0] x3 against pet
    # [1 1 . 0 0], [1 . 0 0 0], [0 0 0 0 0] ("." ignored, (1, 1) predicted pet): TP 3, FP 2, FN 0, TN 8
    # over 13 counted pixels.
    logits = np.array([[[[10.0, -30.0], [10.0, -30.0]]]], np.float32)
    trimap = np.array([[1, 1, 3, 2, 2], [1, 3, 2, 2, 2], [2, 2, 2, 2, 2]], np.uint8)
    native, ignore = PackedMasks.pack([trimap == 1]), PackedMasks.pack([trimap == 3])
    at_size = np.array([[[1, IGNORE], [1, 0]]], np.uint8)  # at 2x2: TP 2, the ignored pixel, TN 1
    scored = score(logits, at_size, native, 2, 0.5, ignore)
    np.testing.assert_array_equal(scored.native[0], [[8, 2], [0, 3]])  # rows true, columns predicted
    np.testing.assert_array_equal(scored.at_size[0], [[1, 0], [0, 2]])
    s = summary(scored.native)
    assert s["dice"] == pytest.approx(6 / 8) and s["iou"] == pytest.approx(3 / 5)
    assert s["pixel_accuracy"] == pytest.approx(11 / 13)
    table = per_image_table(scored, ("background", "pet"), ["a_1"], ["a"], ["cat"])
    assert table["pet_fraction"].tolist() == pytest.approx([3 / 13])
    # The band's pet pixel (0, 2) is in the prediction, which is what was predicted there, not the truth.
    np.testing.assert_array_equal(scored.predictions[0], np.repeat([[1, 1, 0, 0, 0]], 3, axis=0))
    # Without the ignore masks the band is background: (1, 1) becomes a false positive.
    np.testing.assert_array_equal(score(logits, at_size, native, 2, 0.5).native[0], [[9, 3], [0, 3]])
    with pytest.raises(ValueError, match="native_ignore"):
        score(logits, at_size, native, 2, 0.5, PackedMasks.pack([np.zeros((3, 4))]))


# --- native and image size agree when the sizes do -----------------------------------------------------


@pytest.mark.parametrize(("c", "threshold"), [(2, 0.4), (4, 0.5)], ids=TASKS)
def test_native_equals_at_size_when_the_photo_is_already_image_size(c, threshold):
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (5, 1 if c == 2 else c, 32, 32)).astype(np.float32)
    masks = (rng.random((5, 32, 32)) > 0.6).astype(np.uint8) if c == 2 else rng.integers(0, c, (5, 32, 32))
    masks = masks.astype(np.uint8)
    depth = LABELS if c > 2 else 1
    scored = score(logits, masks, PackedMasks.pack(list(masks), depth), c, threshold)
    np.testing.assert_array_equal(scored.native, scored.at_size)
    assert summary(scored.native) == summary(scored.at_size)
    head, more = headline(scored), details(scored, tuple(f"c{k}" for k in range(c)), ["cat"] * 5)
    metric = "dice" if c == 2 else "miou"
    assert head[metric] == head[f"{metric}_at_image_size"]
    for key, value in more["at_image_size"].items():
        assert value == {**head, **more}[key], key
    assert 0.1 < head[metric] < 0.7  # a real, non-trivial score
    # The threshold applies at both sizes: the at-size prediction is sigmoid > 0.4, not > 0.5.
    if c == 2:
        expected = (1 / (1 + np.exp(-logits[:, 0])) > threshold).astype(np.uint8)
        for i in range(5):
            np.testing.assert_array_equal(scored.predictions[i], expected[i])


# --- the threshold of a binary task ----------------------------------------------------------------------


def test_choose_threshold_follows_the_split_it_is_given():
    # One image of four pixels with probabilities 0.22, 0.33, 0.67, 0.78 (off the 0.05 grid).
    logits = _logits_for([[[[0.22, 0.33, 0.67, 0.78]]]])  # (1, 1, 1, 4)
    valid_truth = PackedMasks.pack([np.array([[0, 1, 1, 1]], np.uint8)])  # perfect for t in [0.22, 0.33)
    test_truth = PackedMasks.pack([np.array([[0, 0, 0, 1]], np.uint8)])  # perfect for t in [0.67, 0.78)
    # Ties go to the threshold nearest 0.5: 0.30 of {0.25, 0.30}, 0.70 of {0.70, 0.75}.
    assert choose_threshold(logits, valid_truth) == 0.30
    assert choose_threshold(logits, test_truth) == 0.70


def test_choose_threshold_breaks_a_tie_as_near_0_5_to_the_lower_threshold():
    # Pet at 0.9, 0.42 and 0.02 (below the grid), background at 0.58 three times. Up to 0.40: TP 2, FP 3,
    # FN 1 → Dice 4/8; 0.45 to 0.55: TP 1, FP 3, FN 2 → 2/7; from 0.60: TP 1, FP 0, FN 2 → 2/4. 0.40
    # and 0.60 tie, as near 0.5 as each other: the lower one.
    logits = _logits_for([[[[0.9, 0.42, 0.02, 0.58, 0.58, 0.58]]]])
    truth = PackedMasks.pack([np.array([[1, 1, 1, 0, 0, 0]], np.uint8)])
    assert choose_threshold(logits, truth) == 0.40


def test_choose_threshold_leaves_ignored_pixels_out():
    # Probabilities 0.22, 0.33, 0.67, 0.78; pet only at the last pixel. Counting all four pixels,
    # only t in [0.67, 0.78) is perfect (→ 0.70); with the middle two ignored, any t in [0.22, 0.78)
    # is, and the tie goes to 0.50.
    logits = _logits_for([[[[0.22, 0.33, 0.67, 0.78]]]])
    native = PackedMasks.pack([np.array([[0, 0, 0, 1]], np.uint8)])
    ignore = PackedMasks.pack([np.array([[0, 1, 1, 0]], np.uint8)])
    assert choose_threshold(logits, native) == 0.70
    assert choose_threshold(logits, native, native_ignore=ignore) == 0.50


# --- logits from a model, and test-time augmentation --------------------------------------------------


class _LeftEdge(nn.Module):
    """A model that is not mirror-symmetric: a horizontal difference filter, ``out`` channels."""

    def __init__(self, out: int):
        super().__init__()
        self.conv = nn.Conv2d(3, out, (1, 3), padding=(0, 1), bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            for k in range(out):
                self.conv.weight[k, :, 0, 0] = 1.0 + k
                self.conv.weight[k, :, 0, 2] = -0.5

    def forward(self, x):
        return self.conv(x)


def _forward_of(model):
    def forward(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy()

    return forward


@pytest.mark.parametrize("channels", [1, 3], ids=TASKS[:1] + ["3 classes"])
def test_hflip_tta_averages_the_mirrored_prediction(channels):
    forward = _forward_of(_LeftEdge(channels).eval())
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 6)).astype(np.float32)
    plain, tta = tta_forward(forward, x, "none"), tta_forward(forward, x, "hflip")
    assert tta.shape == (2, channels, 4, 6)
    expected = (forward(x) + forward(x[..., ::-1].copy())[..., ::-1]) / 2
    np.testing.assert_allclose(tta, expected, rtol=1e-6)
    assert np.abs(tta - plain).max() > 0.1  # the model is not symmetric, so TTA changes the logits
    # Flip TTA makes the prediction mirror-equivariant.
    np.testing.assert_allclose(tta_forward(forward, x[..., ::-1].copy(), "hflip"), tta[..., ::-1], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="tta must be one of none, hflip"):
        tta_forward(forward, x, "vflip")


@pytest.mark.parametrize("channels", [1, 3], ids=TASKS[:1] + ["3 classes"])
def test_logits_keep_the_channel_axis_in_batches_in_order(channels):
    forward = _forward_of(_LeftEdge(channels).eval())
    images = np.random.default_rng(2).integers(0, 256, (5, 4, 4, 3), dtype=np.uint8)
    batches = [logits for logits, _ in iter_logits(forward, images, 2, "none")]
    assert [b.shape for b in batches] == [(2, channels, 4, 4), (2, channels, 4, 4), (1, channels, 4, 4)]
    logits, seconds = predict_logits(forward, images, 2, "hflip")
    assert logits.shape == (5, channels, 4, 4) and logits.dtype == np.float32 and seconds > 0
    np.testing.assert_allclose(logits, tta_forward(forward, prepare(images), "hflip"), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.concatenate(batches), forward(prepare(images)), rtol=1e-6, atol=1e-6)


# --- batch by batch, and what does not fit -------------------------------------------------------------


def _random_split(c: int, n: int, size: int, seed: int = 0):
    """Logits (n, L, size, size), at-size masks with an ignored pixel each, native masks of other sizes
    and, for a binary task, native ignore masks (a label map holds its own 255s)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, (n, 1 if c == 2 else c, size, size)).astype(np.float32)
    shapes = rng.integers(size - 3, 2 * size, (n, 2))
    if c == 2:
        masks = (rng.random((n, size, size)) < 0.4).astype(np.uint8)
        native = PackedMasks.pack([(rng.random(tuple(s)) < 0.4).astype(np.uint8) for s in shapes])
        ignore = PackedMasks.pack([(rng.random(tuple(s)) < 0.1).astype(np.uint8) for s in shapes])
    else:
        masks = rng.integers(0, c, (n, size, size)).astype(np.uint8)
        labels = [rng.integers(0, c, tuple(s)).astype(np.uint8) for s in shapes]
        for label in labels:
            label[rng.random(label.shape) < 0.1] = IGNORE
        native, ignore = PackedMasks.pack(labels, LABELS), None
    masks[:, 0, 0] = IGNORE
    return logits, masks, native, ignore


@pytest.mark.parametrize(("c", "threshold"), [(2, 0.4), (4, 0.5)], ids=TASKS)
def test_scoring_batch_by_batch_equals_scoring_the_whole_split_at_once(tmp_path, c, threshold):
    logits, masks, native, ignore = _random_split(c, 7, 8)
    np.save(tmp_path / "masks.npy", masks)
    mapped = np.load(tmp_path / "masks.npy", mmap_mode="r")  # the cache is a read-only memory map
    whole = score(logits, masks, native, c, threshold, ignore)
    scorer = Scorer(mapped, native, c, threshold, ignore)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it wraps a read-only array
        for start, stop in ((0, 3), (3, 4), (4, 7)):  # uneven batches, as the last one is
            scorer.add(logits[start:stop])
    batched = scorer.result()
    assert whole.native.shape == whole.at_size.shape == (7, c, c)
    np.testing.assert_array_equal(batched.native, whole.native)
    np.testing.assert_array_equal(batched.at_size, whole.at_size)
    assert batched.predictions.depth == whole.predictions.depth == native.depth
    for i in range(7):
        np.testing.assert_array_equal(batched.predictions[i], whole.predictions[i])
    # Every counted pixel in one cell, the ignored ones in none; and the counts are not trivial.
    assert whole.at_size.sum() == (masks != IGNORE).sum() == 7 * 63
    assert whole.native.sum() == sum(int((target_mask(native, ignore, i) != IGNORE).sum()) for i in range(7))
    assert 0 < np.trace(whole.native.sum(0)) < whole.native.sum()
    assert (whole.native.sum((0, 1)) > 0).all()  # every class predicted somewhere


def test_threshold_search_batch_by_batch_equals_the_whole_split_at_once():
    logits, _, native, ignore = _random_split(2, 7, 8, seed=1)
    whole = ThresholdSearch(native, native_ignore=ignore)
    whole.add(logits)
    batched = ThresholdSearch(native, native_ignore=ignore)
    for start, stop in ((0, 2), (2, 7)):
        batched.add(logits[start:stop])
    # The TP, FP, FN of every threshold of the grid, summed over all seven images.
    np.testing.assert_array_equal(batched.total, whole.total)
    assert batched.best() == whole.best() == choose_threshold(logits, native, native_ignore=ignore)
    assert whole.total[0, 0] > whole.total[-1, 0] > 0  # a lower threshold finds more pet pixels
    # At 0.5 the counts are those of the scorer's class 1 at native size.
    matrix = score(logits, np.zeros((7, 8, 8), np.uint8), native, 2, 0.5, ignore).native.sum(0)
    k = whole.grid.index(0.5)
    assert whole.total[k].tolist() == [matrix[1, 1], matrix[0, 1], matrix[1, 0]]


@pytest.mark.parametrize(("c", "depth"), [(2, 1), (3, LABELS)], ids=["binary", "3 classes"])
def test_scoring_refuses_what_does_not_fit(c, depth):
    channels = 1 if c == 2 else c
    one = PackedMasks.pack([np.zeros((4, 4), np.uint8)], depth)
    two = PackedMasks.pack([np.zeros((4, 4), np.uint8)] * 2, depth)
    with pytest.raises(ValueError, match="2 logits, 1 masks"):
        score(np.zeros((2, channels, 4, 4), np.float32), np.zeros((1, 4, 4), np.uint8), one, c)
    with pytest.raises(ValueError, match="2 masks, 1 native masks"):
        Scorer(np.zeros((2, 4, 4), np.uint8), one, c)
    scorer = Scorer(np.zeros((2, 4, 4), np.uint8), two, c)
    with pytest.raises(ValueError, match=rf"expected logits \(N, {channels}, H, W\)"):
        scorer.add(np.zeros((1, 2 if c == 2 else 1, 4, 4), np.float32))
    scorer.add(np.zeros((1, channels, 4, 4), np.float32))
    with pytest.raises(ValueError, match="1 logits, 2 masks"):
        scorer.result()
    with pytest.raises(ValueError, match=rf"class indices must be in 0\.\.{c - 1}"):
        Scorer(np.full((1, 4, 4), c, np.uint8), one, c).add(np.zeros((1, channels, 4, 4), np.float32))


def test_scoring_refuses_bit_packed_label_maps_and_the_threshold_search_what_does_not_fit():
    with pytest.raises(ValueError, match="depth 8"):
        Scorer(np.zeros((1, 4, 4), np.uint8), PackedMasks.pack([np.zeros((4, 4))]), 3)
    one = PackedMasks.pack([np.zeros((4, 4))])
    search = ThresholdSearch(one)
    with pytest.raises(ValueError, match="0 logits, 1 native masks"):
        search.best()
    with pytest.raises(ValueError, match="2 logits, 1 native masks"):
        search.add(np.zeros((2, 1, 4, 4), np.float32))
    with pytest.raises(ValueError, match="native_ignore"):
        ThresholdSearch(one, native_ignore=PackedMasks.pack([np.zeros((4, 3))]))


# --- what scoring reads --------------------------------------------------------------------------------


def test_read_species_and_breed_of(tmp_path):
    list_file = tmp_path / "list.txt"
    list_file.write_text(
        "#Image CLASS-ID SPECIES BREED ID\nAbyssinian_1 1 1 1\nbeagle_12 13 2 3\nodd_1 5 9 1\nshort_1 1\n"
    )
    species = read_species(list_file)
    assert species == {"Abyssinian_1": "cat", "beagle_12": "dog"}
    assert breed_of("american_bulldog_12") == "american_bulldog" and breed_of("Bengal_3") == "Bengal"
    assert breed_of("noindex") == "noindex"


def test_read_species_missing_file_is_one_line(tmp_path):
    with pytest.raises(UserError, match="list.txt: list file not found; rerun the download stage"):
        read_species(tmp_path / "list.txt")


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
