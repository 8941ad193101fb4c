"""The plot stage on a multi-class task (3 classes, small hand-made evaluate outputs), and on a binary one
its two class figures: confusion matrices and per-class IoU from the predictions against the truth."""

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import stages.plot
from pipeline.core.constants import MULTICLASS_HEADLINE_METRICS
from pipeline.core.runner import run_stage
from pipeline.data.cache import CachedSplit, load_cache, save_cache
from pipeline.data.classes import Classes
from pipeline.data.layout import breed_of
from pipeline.data.masks import IGNORE, LABELS, PackedMasks
from pipeline.report.class_figures import class_iou, class_worst_grid, palette_overlay, split_confusion
from pipeline.report.inputs import load_predictions, read_table
from pipeline.report.mask_figures import native_photo
from tests.report import test_plots
from tests.report.test_plots import FIGURES, MODELS, SHAPES, STEMS, plot_args
from tests.support import write_params

inputs = test_plots.inputs  # the binary task's plot inputs (a fixture)

CLASSES = Classes(("background", "pet", "boundary"))


def _miou(pred: np.ndarray, truth: np.ndarray) -> float:
    counted = truth != IGNORE
    ious = []
    for c in range(CLASSES.count):
        p, t = (pred == c) & counted, (truth == c) & counted
        if (p | t).any():
            ious.append((p & t).sum() / (p | t).sum())
    return float(np.mean(ious)) if ious else float("nan")


@pytest.fixture
def multiclass(tmp_path):
    """What the plot stage reads for MODELS on 6 test images of a 3-class task at 16 px; the last image's
    truth is all ignored, so its per-image mIoU is NaN (written as an empty cell). Returns the folder."""
    rng = np.random.default_rng(0)
    truths = []
    for h, w in SHAPES:
        truth = np.zeros((h, w), np.uint8)
        truth[h // 4 : 3 * h // 4, w // 5 : 4 * w // 5] = 1
        truth[h // 4, w // 5 : 4 * w // 5] = 2
        truth[0, :] = IGNORE
        truths.append(truth)
    truths[-1][:] = IGNORE
    species = ["cat" if s[0].isupper() else "dog" for s in STEMS]
    breeds = [breed_of(s) for s in STEMS]
    images = rng.integers(0, 256, (len(STEMS), 16, 16, 3), dtype=np.uint8)
    masks = np.zeros((len(STEMS), 16, 16), np.uint8)
    native = PackedMasks.pack(truths, LABELS)
    save_cache(tmp_path / "test.npz", CachedSplit(images, masks, STEMS, native, breeds, species, classes=CLASSES))
    for m, model in enumerate(MODELS):
        preds = [np.roll(np.where(t == IGNORE, 0, t), m + i % 3, axis=1).astype(np.uint8) for i, t in enumerate(truths)]
        with open(tmp_path / f"{model}.npz", "wb") as f:
            np.savez(f, stems=np.array(STEMS), **PackedMasks.pack(preds, LABELS).to_arrays("masks"))
        miou = [_miou(p, t) for p, t in zip(preds, truths, strict=True)]
        table = pd.DataFrame({"stem": STEMS, "breed": breeds, "species": species, "miou": miou})
        table.to_csv(tmp_path / f"{model}_per_image.csv", index=False, na_rep="")
        per_breed = table.groupby(["breed", "species"], as_index=False).agg(
            images=("stem", "size"), miou=("miou", "mean")
        )
        per_breed.to_csv(tmp_path / f"{model}_per_breed.csv", index=False, na_rep="")
        metrics = {"miou": 0.7 - m / 10, "dice": 0.8, "dice_per_image": 0.75, "miou_at_image_size": 0.72}
        metrics |= {"pixel_accuracy": 0.9, "miou_per_image": 0.65}
        metrics |= {"best_valid_miou": 0.6, "best_epoch": 2 + m, "images": len(STEMS), "image_size": 16, "tta": "none"}
        metrics |= {"per_class": {n: {"iou": 0.5, "dice": 0.6, "pixels": 10} for n in CLASSES.names}}
        (tmp_path / f"{model}.json").write_text(json.dumps(metrics))
        live = tmp_path / "live" / model / "plots" / "metrics"
        for metric, column in (
            ("train/loss", "loss"),
            ("valid/loss", "loss"),
            ("valid/dice", "dice"),
            ("valid/miou", "miou"),
        ):
            (live / metric).parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"step": [0, 1, 2], column: [0.3, 0.5, 0.4]}).to_csv(
                live / f"{metric}.tsv", sep="\t", index=False
            )
    write_params(tmp_path / "params.yaml", plot={"num_images": 3, "worst": 2, "seed": 0})
    return tmp_path


def test_plot_stage_writes_every_figure_and_the_miou_scores_of_a_multiclass_task(multiclass):
    assert run_stage(stages.plot.main, plot_args(multiclass)) == 0
    written = sorted(p.name for p in (multiclass / "figs").iterdir())
    assert written == sorted([*(f"{name}.png" for name in FIGURES), "test.json"])
    for name in FIGURES:
        with Image.open(multiclass / "figs" / f"{name}.png") as img:
            assert img.format == "PNG" and min(img.size) > 100
    scores = json.loads((multiclass / "figs" / "test.json").read_text())
    # The mIoU first (the first columns of `dvc exp show`), then what both models' metrics hold.
    assert list(scores) == list(MULTICLASS_HEADLINE_METRICS)
    assert scores["miou"] == {"unet": 0.7, "resnet34_unet": 0.6}


def test_the_confusion_matrices_count_native_pixels_and_skip_ignored_ones(multiclass):
    test = load_cache(multiclass / "test.npz")
    predictions = {m: load_predictions(multiclass / f"{m}.npz")[0] for m in MODELS}
    matrices = split_confusion(test, predictions)
    counted = sum(int((test.native[i] != IGNORE).sum()) for i in range(len(STEMS)))
    for model, matrix in matrices.items():
        assert matrix.shape == (3, 3) and matrix.dtype == np.int64 and matrix.sum() == counted
        expected = np.zeros((3, 3), np.int64)
        for i in range(len(STEMS)):
            truth, pred = test.native[i], predictions[model][i]
            np.add.at(expected, (truth[truth != IGNORE], pred[truth != IGNORE]), 1)
        np.testing.assert_array_equal(matrix, expected)
    iou = class_iou(matrices, CLASSES.names)
    m = matrices["unet"]
    assert iou["unet"]["pet"] == pytest.approx(m[1, 1] / (m[1].sum() + m[:, 1].sum() - m[1, 1]))


def test_worst_images_of_a_multiclass_task_are_the_lowest_miou_ones_drawn_in_the_palette(multiclass):
    test = load_cache(multiclass / "test.npz")
    predictions = {m: load_predictions(multiclass / f"{m}.npz")[0] for m in MODELS}
    per_image = {m: read_table(multiclass / f"{m}_per_image.csv", ("stem",), ("miou",), ("miou",)) for m in MODELS}
    assert per_image["unet"]["miou"].isna().tolist() == [False] * 5 + [True]  # the all-ignored image
    fig = class_worst_grid(test, predictions, per_image, 2)
    axes = np.array(fig.axes).reshape(2 * len(MODELS), 3)
    row = 0
    for model in MODELS:
        table = per_image[model].set_index("stem")["miou"]
        worst = table.sort_values(kind="stable").index[:2]  # the NaN image last: never among the worst
        assert table[list(worst)].max() <= table.dropna().sort_values().iloc[1]
        for stem in worst:
            i = STEMS.index(stem)
            assert axes[row, 0].get_title().startswith(stem)
            assert axes[row, 2].get_title() == f"{model}: mIoU {table[stem]:.3f}"
            photo = native_photo(test.images[i], *SHAPES[i])
            expected = palette_overlay(photo, predictions[model][i], CLASSES.palette)
            np.testing.assert_array_equal(axes[row, 2].get_images()[0].get_array(), expected)
            row += 1


def test_a_non_number_miou_is_still_refused(multiclass, capsys):
    path = multiclass / "unet_per_image.csv"
    table = pd.read_csv(path, keep_default_na=False)
    table.loc[0, "miou"] = "high"
    table.to_csv(path, index=False)
    assert run_stage(stages.plot.main, plot_args(multiclass)) == 1
    assert "column miou holds a non-number" in capsys.readouterr().err
    assert not (multiclass / "figs").exists()


def test_binary_predictions_for_a_multiclass_test_set_are_refused(multiclass, capsys):
    other = multiclass / "binary.npz"
    masks = PackedMasks.pack([np.zeros(s, np.uint8) for s in SHAPES])  # depth 1: a binary task's masks
    with open(other, "wb") as f:
        np.savez(f, stems=np.array(STEMS), **masks.to_arrays("masks"))
    args = plot_args(multiclass, predictions=[multiclass / "unet.npz", other])
    assert run_stage(stages.plot.main, args) == 1
    assert f"{other}: not about the 6 test images" in capsys.readouterr().err


def test_a_binary_task_gets_a_two_class_confusion_matrix_and_iou_bars(inputs):
    test = load_cache(inputs / "test.npz")
    predictions = {m: load_predictions(inputs / f"{m}.npz")[0] for m in MODELS}
    matrices = split_confusion(test, predictions)
    for model, matrix in matrices.items():
        truth = np.concatenate([test.native[i].ravel() for i in range(len(STEMS))]).astype(bool)
        pred = np.concatenate([predictions[model][i].ravel() for i in range(len(STEMS))]).astype(bool)
        expected = [[(~truth & ~pred).sum(), (~truth & pred).sum()], [(truth & ~pred).sum(), (truth & pred).sum()]]
        np.testing.assert_array_equal(matrix, expected)
    iou = class_iou(matrices, ("background", "pet"))
    tp, fp, fn = matrices["unet"][1, 1], matrices["unet"][0, 1], matrices["unet"][1, 0]
    assert iou["unet"]["pet"] == pytest.approx(tp / (tp + fp + fn)) and set(iou["unet"]) == {"background", "pet"}
