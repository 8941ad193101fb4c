"""Per-class figures and mask drawing for any task: palette masks and overlays, a prediction with its wrong
pixels marked, confusion matrices, per-class IoU bars."""

import sys

import numpy as np
import pytest
from matplotlib.patches import Rectangle

from pipeline.data.classes import Classes
from pipeline.data.masks import IGNORE
from pipeline.report.class_figures import confusion_figure, per_class_bars
from pipeline.report.overlays import (
    IGNORE_COLOUR,
    WRONG,
    backdrop,
    class_legend,
    outcome_overlay,
    palette_mask,
    palette_overlay,
)
from pipeline.report.plots import save_figure

CLASSES = Classes(("background", "road", "car"))
NAMES, PALETTE = CLASSES.names, CLASSES.palette
PNG = b"\x89PNG\r\n\x1a\n"


def _saves_png(fig, path) -> None:
    save_figure(fig, path)
    assert path.read_bytes()[:8] == PNG
    # Figures are built without pyplot, so none is left open in its registry.
    if "matplotlib.pyplot" in sys.modules:
        assert sys.modules["matplotlib.pyplot"].get_fignums() == []


def test_palette_mask_gives_each_index_its_colour_and_ignored_pixels_the_neutral_grey():
    mask = np.array([[0, 1, 2], [2, IGNORE, 0]], np.uint8)
    out = palette_mask(mask, PALETTE)
    assert out.shape == (2, 3, 3) and out.dtype == np.uint8
    expected = np.array([[PALETTE[0], PALETTE[1], PALETTE[2]], [PALETTE[2], IGNORE_COLOUR, PALETTE[0]]], np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert IGNORE_COLOUR not in PALETTE


@pytest.mark.parametrize("index", [3, 254])
def test_palette_mask_rejects_an_index_outside_the_palette(index):
    with pytest.raises(ValueError, match=rf"indices \[{index}\] outside 0\.\.2"):
        palette_mask(np.array([[0, index, IGNORE]], np.uint8), PALETTE)


def test_palette_overlay_tints_each_class_by_alpha_and_keeps_background_and_ignored_pixels():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
    mask = rng.choice(np.array([0, 1, 2, IGNORE], np.uint8), (4, 5))
    mask[0, :4] = [0, 1, 2, IGNORE]  # every value at least once
    out = palette_overlay(image, mask, CLASSES, alpha=0.3)
    assert out.shape == image.shape and out.dtype == np.uint8
    kept = (mask == 0) | (mask == IGNORE)
    np.testing.assert_array_equal(out[kept], image[kept])
    for c in (1, 2):
        expected = np.round(0.7 * image[mask == c].astype(np.float32) + 0.3 * np.array(PALETTE[c], np.float32))
        np.testing.assert_array_equal(out[mask == c], expected.astype(np.uint8))
    with pytest.raises(ValueError, match="differ in size"):
        palette_overlay(image, mask[:, :4], CLASSES)


@pytest.mark.parametrize(
    "names, photo",
    [(("sky", "road", "car"), ()), (("road", "Background", "car"), (1,)), (("background", "pet"), (0,))],
    ids=["no background", "background second", "the pets"],
)
def test_only_a_class_named_background_keeps_the_photo_every_other_is_coloured(names, photo):
    classes = Classes(names)
    assert backdrop(names) == photo
    image = np.full((1, len(names) + 1, 3), 200, np.uint8)
    mask = np.array([[*range(len(names)), IGNORE]], np.uint8)
    out = palette_overlay(image, mask, classes, alpha=0.5)
    for c in range(len(names)):
        expected = image[0, c] if c in photo else np.round(100 + np.array(classes.palette[c]) / 2)
        np.testing.assert_array_equal(out[0, c], expected)
    np.testing.assert_array_equal(out[0, -1], image[0, -1])  # ignored pixels keep the photo
    legend = [h.get_label() for h in class_legend(classes)]
    shown = [names[c] for c in photo]
    assert legend == [" / ".join([*shown, "ignored"]) + ": photo", *(n for n in names if n not in shown)]


@pytest.mark.filterwarnings("error")  # an empty row must not divide by zero
def test_confusion_figure_row_normalises_each_models_matrix_and_blanks_empty_rows(tmp_path):
    a = np.array([[6, 2, 0], [1, 3, 0], [0, 0, 0]], np.int64)  # no true car pixels
    b = np.array([[5, 0, 5], [0, 4, 0], [1, 1, 2]], np.int64)
    fig = confusion_figure({"unet": a, "deeplab": b}, NAMES)
    panels = [ax for ax in fig.axes if ax.get_images()]
    assert [ax.get_title() for ax in panels] == ["unet", "deeplab"]
    unet = panels[0].get_images()[0].get_array()
    np.testing.assert_allclose(unet[:2].sum(axis=1), 1.0)
    np.testing.assert_allclose(unet[0], [0.75, 0.25, 0.0])
    assert np.ma.getmaskarray(unet)[2].all() and not np.ma.getmaskarray(unet)[:2].any()
    np.testing.assert_allclose(panels[1].get_images()[0].get_array().sum(axis=1), 1.0)
    for ax in panels:
        assert [t.get_text() for t in ax.get_xticklabels()] == list(NAMES)
        assert [t.get_text() for t in ax.get_yticklabels()] == list(NAMES)
        assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    # A percentage in every cell of a row with pixels, one note across the empty row; dark cells get white text.
    texts = {t.get_position(): t for t in panels[0].texts}
    assert sorted(texts) == sorted([(c, r) for c in range(3) for r in range(2)] + [(1, 2)])
    assert texts[(1, 2)].get_text() == "no true pixels"
    assert texts[(0, 0)].get_text() == "75.0%" and texts[(2, 0)].get_text() == "0.0%"
    assert texts[(2, 0)].get_color() == "white" and texts[(0, 0)].get_color() == "black"
    assert fig.get_suptitle() == "Confusion matrix (row-normalised, test split)"
    _saves_png(fig, tmp_path / "confusion.png")


def test_confusion_figure_rejects_a_matrix_of_another_size():
    with pytest.raises(ValueError, match=r"unet: confusion matrix of shape \(2, 2\), expected \(3, 3\)"):
        confusion_figure({"unet": np.eye(2, dtype=np.int64)}, NAMES)


def test_per_class_bars_draw_a_bar_per_model_and_present_class_and_mark_absent_ones(tmp_path):
    scores = {
        "unet": {"background": 0.9, "road": 0.5, "car": None},
        "deeplab": {"background": 0.8, "road": 0.0, "car": 0.25},
    }
    fig = per_class_bars(scores, NAMES)
    ax = fig.axes[0]
    bars = [p for p in ax.patches if isinstance(p, Rectangle)]
    assert sorted(b.get_width() for b in bars) == sorted([0.9, 0.5, 0.8, 0.0, 0.25])
    # Within each class's group the first model is on top; the first class is the top group.
    by_height = [b.get_width() for b in sorted(bars, key=lambda b: -b.get_y())]
    assert by_height == [0.9, 0.8, 0.5, 0.0, 0.25]
    assert [t.get_text() for t in ax.texts].count("absent") == 1
    assert {"0.900", "0.250", "0.000"} <= {t.get_text() for t in ax.texts}
    top_down = sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])
    assert [t.get_text() for t in top_down] == list(NAMES)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["unet", "deeplab"]
    assert ax.get_title() == "Per-class IoU (test split)"
    _saves_png(fig, tmp_path / "iou.png")
    recall = per_class_bars(scores, NAMES, "recall").axes[0]
    assert recall.get_title() == "Per-class recall (test split)" and recall.get_xlabel() == "test recall of the class"


def test_per_class_bars_want_every_class_of_every_model():
    with pytest.raises(KeyError, match="car"):
        per_class_bars({"unet": {"background": 0.9, "road": 0.5}}, NAMES)


@pytest.mark.parametrize("classes", [Classes(("background", "pet")), CLASSES], ids=["binary", "3 classes"])
def test_outcome_overlay_draws_right_pixels_in_the_palette_and_wrong_ones_marked(classes):
    image = np.full((2, 4, 3), 100, np.uint8)
    truth = np.array([[1, 1, 0, 0], [0, 1, IGNORE, 0]], np.uint8)
    pred = np.array([[1, 0, 1, 0], [0, 1, 1, 0]], np.uint8)
    out = outcome_overlay(image, pred, truth, classes, alpha=0.5)
    drawn = palette_overlay(image, pred, classes)  # class 1 tinted at 0.5, class 0 (background) the photo
    expected = drawn.copy()
    for y, x in ((0, 1), (0, 2)):  # a missed class-1 pixel and a wrong class-1 pixel
        expected[y, x] = np.round(drawn[y, x] / 2 + WRONG / 2)
    np.testing.assert_array_equal(out, expected)
    assert (out[1, 2] == drawn[1, 2]).all()  # an ignored pixel shows the prediction, never marked wrong
    assert (out[0, 3] == image[0, 3]).all()  # class 0 predicted right keeps the photo
    with pytest.raises(ValueError, match="differ in size"):
        outcome_overlay(image, pred[:, :3], truth, classes)


def test_the_class_legend_names_every_class_and_the_wrong_pixels():
    names = [h.get_label() for h in class_legend(CLASSES, wrong=True)]
    assert names == ["background / ignored: photo", "road", "car", "wrong (over the predicted class)"]
    assert [h.get_label() for h in class_legend(CLASSES)] == names[:-1]
