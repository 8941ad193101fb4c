"""What the evaluate stage writes for any task (pipeline/evaluate/tables.py): the headline scores, the
details with per-class scores, the per-image and per-breed tables, all from the per-image confusion
matrices of :func:`pipeline.evaluate.scoring.score`."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from pipeline.core.constants import HEADLINE_METRICS, MULTICLASS_HEADLINE_METRICS, headline_keys
from pipeline.data.decode import trimap_to_mask
from pipeline.data.masks import IGNORE, LABELS, PackedMasks
from pipeline.evaluate.scoring import score
from pipeline.evaluate.tables import details, headline, per_breed_table, per_image_table, summary

TASKS = ["binary", "3 classes"]
BINARY, CLASSES = ("background", "pet"), ("background", "pet", "boundary")


def _logits(labels: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Logits float32 (N, L, H, W) whose label maps are ``labels`` (N of (H, W)): one channel of ±5 for two
    classes; 10 at each pixel's class, 0 elsewhere, for more."""
    rows = np.stack(labels)
    if num_classes == 2:
        return np.where(rows == 1, 5.0, -5.0).astype(np.float32)[:, None]
    return (10.0 * (np.arange(num_classes)[None, :, None, None] == rows[:, None])).astype(np.float32)


def test_headline_keys_follow_the_task():
    assert headline_keys(2) == HEADLINE_METRICS and headline_keys(3) == headline_keys(5) == MULTICLASS_HEADLINE_METRICS


# --- a hand-built case of each task --------------------------------------------------------------------


def _binary_hand_case():
    """A 3x5 trimap under boundary: pet, scored from logits at "image size" 2x2: left column +10, right
    column -30. Bilinear (align_corners=False) to width 5 samples source x = (x + 0.5) * 2/5 - 0.5 = -0.3,
    0.1, 0.5, 0.9, 1.3 (clamped to [0, 1]), i.e. logits 10, 6, -10, -26, -30 in every row: columns 0 and 1
    are predicted pet. Prediction rows [1 1 0 0 0] x3 against truth [1 1 1 0 0], [1 1 0 0 0], [0 0 0 0 0]
    (pet where 1 or 3): TP 4, FP 2, FN 1, TN 8. At image size the same logits are perfect against the
    2x2 mask."""
    logits = np.array([[[[10.0, -30.0], [10.0, -30.0]]]], np.float32)
    trimap = np.array([[1, 1, 3, 2, 2], [1, 3, 2, 2, 2], [2, 2, 2, 2, 2]], np.uint8)
    at_size = np.array([[[1, 0], [1, 0]]], np.uint8)
    return score(logits, at_size, PackedMasks.pack([trimap_to_mask(trimap, "pet")]), 2, 0.5)


# A 3x4 photo of 3 classes: truth and the prediction the logits below give at that size ((1, 3) is
# ignored, and predicted class 1 there, which must count nowhere).
TRUTH = np.array([[0, 0, 1, 1], [0, 2, 1, IGNORE], [2, 2, 1, 0]], np.uint8)
PRED = np.array([[0, 1, 1, 2], [0, 2, 2, 1], [2, 0, 1, 0]], np.uint8)


def _multiclass_hand_case():
    """Logits (1, 3, 4, 4) whose rows are PRED's rows 0, 1, 1, 2, and at-size truth likewise. Resized to
    3 rows (bilinear, align_corners=False) they give PRED exactly (test_scoring's native label test)."""
    rows = [0, 1, 1, 2]
    return score(_logits([PRED[rows]], 3), TRUTH[rows][None], PackedMasks.pack([TRUTH], LABELS), 3)


HAND = {
    "binary": {
        "scored": _binary_hand_case,
        "names": BINARY,
        "native": [[8, 2], [1, 4]],  # rows true, columns predicted
        "at_size": [[2, 0], [0, 2]],
        "prediction": np.repeat([[1, 1, 0, 0, 0]], 3, axis=0),
        "depth": 1,
        "headline": {"dice": 8 / 11, "iou": 4 / 7, "dice_per_image": 8 / 11, "dice_at_image_size": 1.0},
        "details": {
            # Background: TP 8, FP 1, FN 2; pet: TP 4, FP 2, FN 1.
            "per_class": {
                "background": {"iou": 8 / 11, "dice": 16 / 19, "precision": 8 / 9, "recall": 8 / 10, "pixels": 10},
                "pet": {"iou": 4 / 7, "dice": 8 / 11, "precision": 4 / 6, "recall": 4 / 5, "pixels": 5},
            },
            "dice_per_image_median": 8 / 11,
            "pixel_accuracy": 12 / 15,
            "at_image_size": {"iou": 1.0, "dice_per_image": 1.0, "dice_per_image_median": 1.0, "pixel_accuracy": 1.0},
            "species": {"cat": {"dice": 8 / 11, "dice_per_image": 8 / 11, "images": 1}},
            "images": 1,
        },
    },
    "3 classes": {
        "scored": _multiclass_hand_case,
        "names": CLASSES,
        # Pairs (true, predicted) over the 11 counted pixels:
        #   true 0: 0 0 0 | 1      → [3, 1, 0]
        #   true 1: 1 1 | 2 2      → [0, 2, 2]
        #   true 2: 2 2 | 0        → [1, 0, 2]
        "native": [[3, 1, 0], [0, 2, 2], [1, 0, 2]],
        # At 4x4 the truth and prediction are the 3x4 ones with row 1 twice: row 1's pairs (0, 0), (2, 2),
        # (1, 2) (and its ignored pixel) count once more.
        "at_size": [[4, 1, 0], [0, 2, 3], [1, 0, 3]],
        "prediction": PRED,
        "depth": LABELS,
        # Class 0: TP 3, FP 1, FN 1 → IoU 3/5, Dice 6/8; class 1: TP 2, FP 1, FN 2 → 2/5, 4/7;
        # class 2: TP 2, FP 2, FN 1 → 2/5, 4/7. At 4x4: class 0 TP 4, FP 1, FN 1 → 4/6, 8/10; class 1:
        # TP 2, FP 1, FN 3 → 2/6, 4/8; class 2: TP 3, FP 3, FN 1 → 3/7, 6/10; 9 of 14 pixels right.
        "headline": {
            "miou": (3 / 5 + 2 / 5 + 2 / 5) / 3,
            "dice": (6 / 8 + 4 / 7 + 4 / 7) / 3,
            "dice_per_image": (6 / 8 + 4 / 7 + 4 / 7) / 3,  # one image
            "miou_at_image_size": (4 / 6 + 2 / 6 + 3 / 7) / 3,
            "pixel_accuracy": 7 / 11,
        },
        "details": {
            "per_class": {
                "background": {"iou": 3 / 5, "dice": 6 / 8, "precision": 3 / 4, "recall": 3 / 4, "pixels": 4},
                "pet": {"iou": 2 / 5, "dice": 4 / 7, "precision": 2 / 3, "recall": 2 / 4, "pixels": 4},
                "boundary": {"iou": 2 / 5, "dice": 4 / 7, "precision": 2 / 4, "recall": 2 / 3, "pixels": 3},
            },
            "miou_per_image": 7 / 15,
            "at_image_size": {
                "dice": (8 / 10 + 4 / 8 + 6 / 10) / 3,
                "dice_per_image": (8 / 10 + 4 / 8 + 6 / 10) / 3,
                "pixel_accuracy": 9 / 14,
                "miou_per_image": (4 / 6 + 2 / 6 + 3 / 7) / 3,
            },
            "species": {"cat": {"miou": 7 / 15, "miou_per_image": 7 / 15, "images": 1}},
            "images": 1,
        },
    },
}


def _approx(value):
    """``value`` with every float a pytest.approx, nested dicts included."""
    if isinstance(value, dict):
        return {key: _approx(v) for key, v in value.items()}
    return pytest.approx(value) if isinstance(value, float) else value


@pytest.mark.parametrize("task", TASKS)
def test_scores_of_a_hand_built_case_at_native_and_at_image_size(task):
    case = HAND[task]
    scored = case["scored"]()
    np.testing.assert_array_equal(scored.native, [case["native"]])
    np.testing.assert_array_equal(scored.at_size, [case["at_size"]])
    np.testing.assert_array_equal(scored.predictions[0], case["prediction"])
    assert scored.predictions.depth == case["depth"]
    head = headline(scored)
    # The headline keys in the order of the metrics file, less the training's two.
    assert list(head) == list(headline_keys(len(case["names"]))[:-2])
    assert head == _approx(case["headline"])
    assert details(scored, case["names"], ["cat"]) == _approx(case["details"])


@pytest.mark.parametrize("task", TASKS)
def test_an_absent_class_is_null_and_left_out_of_the_means(task):
    # A perfect prediction in which the last class is neither true nor predicted.
    names = BINARY if task == "binary" else CLASSES
    truth = np.zeros((2, 2), np.uint8) if task == "binary" else np.array([[0, 0], [1, 1]], np.uint8)
    depth = 1 if task == "binary" else LABELS
    scored = score(_logits([truth], len(names)), truth[None], PackedMasks.pack([truth], depth), len(names))
    head, more = headline(scored), details(scored, names, ["dog"])
    absent = {"iou": None, "dice": None, "precision": None, "recall": None, "pixels": 0}
    assert more["per_class"][names[-1]] == absent
    perfect = {"iou": 1.0, "dice": 1.0, "precision": 1.0, "recall": 1.0, "pixels": int((truth == 0).sum())}
    assert more["per_class"]["background"] == perfect
    # The task's score: a perfect mIoU over the present classes; for two classes the Dice of an image with
    # nothing to find and nothing found, which is 1.
    metric = "dice" if task == "binary" else "miou"
    assert head[metric] == head[f"{metric}_at_image_size"] == more["species"]["dog"][metric] == 1.0
    json.dumps({**head, **more}, allow_nan=False)


def test_both_empty_scores_one_and_one_empty_scores_zero():
    empty, full = np.zeros((4, 4), np.uint8), np.ones((4, 4), np.uint8)
    truths = [empty, empty, full]  # none/none, pet predicted on empty, none on a pet
    logits = _logits([empty, full, empty], 2)
    scored = score(logits, np.stack(truths), PackedMasks.pack(truths), 2)
    table = per_image_table(scored, BINARY, ["a_1", "b_1", "c_1"], ["a", "b", "c"], ["cat", "dog", "dog"])
    assert table["dice"].tolist() == [1.0, 0.0, 0.0]
    assert table["iou"].tolist() == [1.0, 0.0, 0.0]
    assert table["pet_fraction"].tolist() == [0.0, 0.0, 1.0]
    s = summary(scored.native)
    assert s["dice_per_image"] == pytest.approx(1 / 3) and s["dice_per_image_median"] == 0.0
    assert s["dice"] == 0.0  # dataset level: no TP anywhere


# --- the per-image and per-breed tables, and the species ------------------------------------------------


def _binary_images():
    """Three binary images of 1x4 pixels; the breed "x" has a perfect small pet and a half-found big one."""
    truths = [np.array([[1, 0, 0, 0]]), np.array([[1, 1, 1, 1]]), np.array([[1, 1, 0, 0]])]
    preds = [np.array([[1, 0, 0, 0]]), np.array([[1, 1, 0, 0]]), np.array([[0, 0, 1, 1]])]
    truths = [t.astype(np.uint8) for t in truths]
    return score(_logits(preds, 2), np.stack(truths), PackedMasks.pack(truths), 2)


def _class_images():
    """Three 2x2 images of 3 classes: one perfect, one half right, one all ignored."""
    truths = [np.array([[0, 1], [2, 2]]), np.array([[1, 1], [0, 0]]), np.full((2, 2), IGNORE)]
    preds = [np.array([[0, 1], [2, 2]]), np.array([[1, 0], [0, 1]]), np.array([[0, 1], [2, 0]])]
    truths = [t.astype(np.uint8) for t in truths]
    return score(_logits(preds, 3), np.stack(truths), PackedMasks.pack(truths, LABELS), 3)


def _sizes():
    """A binary task's photos of 3x5 and 7x2 pixels, every pixel predicted pet: image 1's 15 pet pixels
    are true positives, image 2's 14 false ones."""
    truths = [np.ones((3, 5), np.uint8), np.zeros((7, 2), np.uint8)]
    return score(np.ones((2, 1, 4, 4), np.float32), np.ones((2, 4, 4), np.uint8), PackedMasks.pack(truths), 2)


COUNTS = [f"{kind}_{name}" for name in CLASSES for kind in ("tp", "fp", "fn")]
PER_IMAGE = {
    "binary": {
        "scored": _sizes,
        "names": BINARY,
        "columns": ["pet_fraction", "dice", "iou", "tp", "fp", "fn"],
        "sizes": [[5, 3], [2, 7]],
        "values": {
            "pet_fraction": [1.0, 0.0],
            "dice": [1.0, 0.0],
            "iou": [1.0, 0.0],
            "tp": [15, 0],
            "fp": [0, 14],
            "fn": [0, 0],
        },
    },
    "3 classes": {
        "scored": _class_images,
        "names": CLASSES,
        "columns": ["miou", "dice", *COUNTS],
        "sizes": [[2, 2]] * 3,
        # Image 2: class 0 TP 1, FP 1, FN 1 → IoU 1/3, Dice 1/2; class 1 likewise; class 2 absent.
        # Image 3: all ignored: no score (NaN, an empty CSV cell), no count.
        "values": {
            "miou": [1.0, 1 / 3, math.nan],
            "dice": [1.0, 1 / 2, math.nan],
            "tp_background": [1, 1, 0],
            "fp_background": [0, 1, 0],
            "fn_background": [0, 1, 0],
            "tp_pet": [1, 1, 0],
            "fp_pet": [0, 1, 0],
            "fn_pet": [0, 1, 0],
            "tp_boundary": [2, 0, 0],
            "fp_boundary": [0, 0, 0],
            "fn_boundary": [0, 0, 0],
        },
    },
}


@pytest.mark.parametrize("task", TASKS)
def test_per_image_table_columns_scores_counts_and_sizes(task):
    case = PER_IMAGE[task]
    n = len(case["sizes"])
    stems, breeds, species = [f"b{i}_1" for i in range(n)], [f"b{i}" for i in range(n)], ["cat"] * n
    table = per_image_table(case["scored"](), case["names"], stems, breeds, species)
    assert list(table.columns) == ["stem", "breed", "species", "width", "height", *case["columns"]]
    assert table["stem"].tolist() == stems and table["breed"].tolist() == breeds
    assert table[["width", "height"]].values.tolist() == case["sizes"]
    for column, expected in case["values"].items():
        assert table[column].tolist() == pytest.approx(expected, nan_ok=True), column


GROUPS = {
    "binary": {
        "scored": _binary_images,
        "names": BINARY,
        "breeds": ["x", "x", "y"],
        "species": ["cat", "cat", "unknown"],
        # Summed counts for x: TP 1 + 2, FP 0, FN 0 + 2 → Dice 6/8, not the mean of 1 and 2/3. y: TP 0,
        # FP 2, FN 2. Worst first.
        "breed_table": [("y", "unknown", 1, 0.0, 0.0), ("x", "cat", 2, 6 / 8, (1 + 2 / 3) / 2)],
        "by_species": {
            "cat": {"dice": 6 / 8, "dice_per_image": (1 + 2 / 3) / 2, "images": 2},
            "unknown": {"dice": 0.0, "dice_per_image": 0.0, "images": 1},
        },
        "overall": {"dice_per_image": (1 + 2 / 3 + 0) / 3},
    },
    "3 classes": {
        "scored": _class_images,
        "names": CLASSES,
        "breeds": ["a", "a", "b"],
        "species": ["cat", "cat", "dog"],
        # Cat, summed: class 0 TP 2, FP 1, FN 1 → 2/4; class 1 TP 2, FP 1, FN 1 → 2/4; class 2 TP 2 → 1.
        # The all-ignored dog has no score (NaN sorts last; null in JSON) and is left out of the means over
        # images, not counted as 0 or 1.
        "breed_table": [("a", "cat", 2, (1 / 2 + 1 / 2 + 1) / 3, (1 + 1 / 3) / 2), ("b", "dog", 1, math.nan, math.nan)],
        "by_species": {
            "cat": {"miou": (1 / 2 + 1 / 2 + 1) / 3, "miou_per_image": (1 + 1 / 3) / 2, "images": 2},
            "dog": {"miou": None, "miou_per_image": None, "images": 1},
        },
        "overall": {"miou_per_image": (1 + 1 / 3) / 2, "dice_per_image": (1 + 1 / 2) / 2},
    },
}


@pytest.mark.parametrize("task", TASKS)
def test_species_and_breed_scores_sum_counts_within_the_group(task):
    case = GROUPS[task]
    scored = case["scored"]()
    stems = [f"{breed}_{i}" for i, breed in enumerate(case["breeds"])]
    per_image = per_image_table(scored, case["names"], stems, case["breeds"], case["species"])
    breeds = per_breed_table(scored, per_image)
    metric = "dice" if task == "binary" else "miou"
    expected = pd.DataFrame(case["breed_table"], columns=["breed", "species", "images", metric, f"{metric}_per_image"])
    pd.testing.assert_frame_equal(breeds, expected, check_dtype=False)
    more = details(scored, case["names"], case["species"])
    assert more["species"] == _approx(case["by_species"]) and more["images"] == 3
    summed = {**headline(scored), **more}
    assert {key: summed[key] for key in case["overall"]} == _approx(case["overall"])
    json.dumps(summed, allow_nan=False)


@pytest.mark.parametrize("task", TASKS)
def test_a_folder_dataset_gets_no_breed_table_and_no_species_breakdown(task):
    # A folder dataset's images are all of breed and species "unknown": one row, one entry, saying nothing
    # the test score does not.
    case = GROUPS[task]
    scored = case["scored"]()
    unknown = ["unknown"] * 3
    per_image = per_image_table(scored, case["names"], ["a", "b", "c"], unknown, unknown)
    assert per_breed_table(scored, per_image) is None
    more = details(scored, case["names"], unknown)
    assert "species" not in more and more["images"] == 3
    # One known breed or species among them is enough for a breakdown (the pets).
    per_image.loc[0, "breed"] = "a"
    assert per_breed_table(scored, per_image)["breed"].tolist().count("a") == 1
    assert set(details(scored, case["names"], ["cat", "unknown", "unknown"])["species"]) == {"cat", "unknown"}
