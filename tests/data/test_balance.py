"""Pixel counts by class and median frequency balancing, against hand computations."""

import numpy as np
import pytest

from pipeline.core.errors import UserError
from pipeline.data.balance import PixelCounts, class_report, class_weights, median_frequency

# Two 2x2 masks of three classes; 255 is ignored and counts in nothing.
MASKS = [np.array([[0, 0], [0, 1]], np.uint8), np.array([[0, 2], [2, 255]], np.uint8)]


def _counts() -> PixelCounts:
    counts = PixelCounts(3)
    for mask in MASKS:
        counts.add(mask)
    return counts


def test_pixels_and_the_pixels_of_the_images_holding_each_class_are_counted():
    counts = _counts()
    assert counts.pixels.tolist() == [4, 1, 2]
    # class 0 is in both images (4 + 3 labelled pixels), class 1 in the first (4), class 2 in the second (3)
    assert counts.present.tolist() == [7, 4, 3]
    assert PixelCounts.from_json(counts.to_json()).present.tolist() == [7, 4, 3]


def test_median_frequency_weights_match_eigen_and_fergus_by_hand():
    # f = [4/7, 1/4, 2/3]; median 4/7; w_c = median / f_c
    assert median_frequency(_counts()) == pytest.approx([1.0, (4 / 7) / (1 / 4), (4 / 7) / (2 / 3)])


def test_a_class_absent_from_the_split_gets_weight_zero_and_the_median_skips_it():
    counts = PixelCounts(4)
    for mask in MASKS:
        counts.add(mask)
    assert median_frequency(counts) == pytest.approx([1.0, (4 / 7) / (1 / 4), (4 / 7) / (2 / 3), 0.0])


def test_a_split_without_labelled_pixels_fails_in_one_line():
    counts = PixelCounts(2)
    counts.add(np.full((2, 2), 255, np.uint8))
    with pytest.raises(UserError, match="no labelled pixel"):
        median_frequency(counts)


def test_the_param_gives_none_the_median_weights_or_one_listed_weight_per_class():
    assert class_weights("none", _counts()) is None
    assert class_weights("median_frequency", _counts()) == pytest.approx(median_frequency(_counts()))
    assert class_weights([1, 2, 3.5], _counts()).tolist() == [1.0, 2.0, 3.5]
    with pytest.raises(UserError, match="lists 2 weights but the task has 3 classes") as info:
        class_weights([1, 2], _counts())
    assert "\n" not in str(info.value)


def test_the_data_report_gives_each_class_its_pixels_share_and_weight():
    report = class_report(("sky", "pole", "sign"), _counts())
    assert report["pole"] == {"pixels": 1, "fraction": pytest.approx(1 / 7), "median_frequency": pytest.approx(16 / 7)}
    assert sum(entry["fraction"] for entry in report.values()) == pytest.approx(1.0)
