"""The plot stage and its figures, one set for every task, on small hand-made evaluate and training outputs:
a binary task and a 3-class task whose last image is all ignored (its per-image mIoU is NaN)."""

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import stages.plot
from pipeline.core.constants import CLASS_IOU, HEADLINE_METRICS, MULTICLASS_HEADLINE_METRICS
from pipeline.core.errors import UserError
from pipeline.core.runner import run_stage
from pipeline.data.cache import CachedSplit, load_cache, save_cache
from pipeline.data.classes import BINARY_PETS, Classes
from pipeline.data.layout import breed_of
from pipeline.data.masks import IGNORE, LABELS, PackedMasks
from pipeline.report.class_figures import per_class, split_confusion
from pipeline.report.files import FIGURES, model_files
from pipeline.report.inputs import load_predictions, read_metrics, read_table
from pipeline.report.mask_figures import native_photo, overlay_grid, worst_grid, worst_stems
from pipeline.report.overlays import outcome_overlay
from pipeline.report.plots import breed_order, ecdf, per_breed_bars
from pipeline.report.table import side_by_side
from tests.support import write_params

MODELS = ("unet", "resnet34_unet")
STEMS = ["Bengal_1", "Bengal_2", "beagle_1", "beagle_2", "beagle_3", "Persian_7"]
SHAPES = [(20, 30), (24, 18), (16, 16), (30, 20), (18, 26), (22, 22)]  # (height, width), as photos vary
TRIMAP = Classes(("background", "pet", "boundary"))
STREET = Classes(("sky", "road", "car"))  # a folder dataset's classes: none of them is the background
TASKS = {"binary": BINARY_PETS, "3 classes": TRIMAP}
PNG = b"\x89PNG\r\n\x1a\n"


def _score(pred: np.ndarray, truth: np.ndarray, classes: Classes) -> float:
    """The image's Dice of class 1 (two classes), or its mIoU over the present classes, by hand."""
    counted = truth != IGNORE
    ious = []
    for c in range(classes.count):
        p, t = (pred == c) & counted, (truth == c) & counted
        if classes.binary and c == 1:
            both = (p & t).sum() * 2 + (p & ~t).sum() + (~p & t).sum()
            return 1.0 if both == 0 else 2 * (p & t).sum() / both
        if (p | t).any():
            ious.append((p & t).sum() / (p | t).sum())
    return float(np.mean(ious)) if ious else float("nan")


def _truths(classes: Classes) -> list[np.ndarray]:
    truths = []
    for h, w in SHAPES:
        truth = np.zeros((h, w), np.uint8)
        truth[h // 4 : 3 * h // 4, w // 5 : 4 * w // 5] = 1
        if not classes.binary:
            truth[h // 4, w // 5 : 4 * w // 5] = 2
            truth[0, :] = IGNORE
        truths.append(truth)
    if not classes.binary:
        truths[-1][:] = IGNORE
    return truths


def _labels(pets: bool) -> tuple[list[str], list[str]]:
    """Each of STEMS's breed and species: from the pets' stem, or "unknown" for a folder dataset."""
    if not pets:
        return ["unknown"] * len(STEMS), ["unknown"] * len(STEMS)
    return [breed_of(s) for s in STEMS], ["cat" if s[0].isupper() else "dog" for s in STEMS]


def _write_model(root: Path, m: int, model: str, truths: list[np.ndarray], classes: Classes, pets: bool) -> None:
    files = model_files(model, root / "live", root / "evaluation", root / "predictions")
    depth = 1 if classes.binary else LABELS
    preds = [np.roll(np.where(t == IGNORE, 0, t), 2 * m + i % 3, axis=1).astype(np.uint8) for i, t in enumerate(truths)]
    files.predictions.parent.mkdir(parents=True, exist_ok=True)
    with open(files.predictions, "wb") as f:
        np.savez(f, stems=np.array(STEMS), **PackedMasks.pack(preds, depth).to_arrays("masks"))
    score = "dice" if classes.binary else "miou"
    breeds, species = _labels(pets)
    values = [_score(p, t, classes) for p, t in zip(preds, truths, strict=True)]
    table = pd.DataFrame({"stem": STEMS, "breed": breeds, "species": species, score: values})
    files.metrics.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(files.per_image, index=False, na_rep="")
    if pets:  # as the evaluate stage: a folder dataset has no per-breed table
        per_breed = table.groupby(["breed", "species"], as_index=False).agg(
            images=("stem", "size"), **{score: (score, "mean")}
        )
        per_breed.to_csv(files.per_breed, index=False, na_rep="")
    if classes.binary:
        metrics = {"dice": 0.9 - m / 10, "iou": 0.8, "dice_per_image": 0.85, "dice_at_image_size": 0.95}
        metrics |= {"best_valid_dice": 0.9, "threshold": 0.5}
    else:
        metrics = {"miou": 0.7 - m / 10, "dice": 0.8, "dice_per_image": 0.75, "miou_at_image_size": 0.72}
        metrics |= {"pixel_accuracy": 0.9, "best_valid_miou": 0.6, "threshold": None}
    metrics |= {"best_epoch": 3 + m, "images": len(STEMS), "tta": "none", "image_size": 16}
    files.metrics.write_text(json.dumps(metrics))
    for metric in ("train/loss", "valid/loss", "valid/dice", f"valid/{score}"):
        path = files.live / "plots" / "metrics" / f"{metric}.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        column = Path(metric).name
        pd.DataFrame({"step": [0, 1, 2], column: [0.9, 0.5, 0.4]}).to_csv(path, sep="\t", index=False)


def _make_inputs(root: Path, classes: Classes, pets: bool) -> Path:
    """Everything the plot stage reads, by folder, for MODELS on 6 test images at 16 px of ``classes``, with
    the pets' breeds or a folder dataset's "unknown" ones; returns ``root``."""
    truths = _truths(classes)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (len(STEMS), 16, 16, 3), dtype=np.uint8)
    masks = np.zeros((len(STEMS), 16, 16), np.uint8)
    native = PackedMasks.pack(truths, 1 if classes.binary else LABELS)
    breeds, species = _labels(pets)
    save_cache(root / "test.npz", CachedSplit(images, masks, STEMS, native, breeds, species, classes=classes))
    for m, model in enumerate(MODELS):
        _write_model(root, m, model, truths, classes, pets)
    write_params(root / "params.yaml", plot={"num_images": 3, "worst": 2, "seed": 0})
    return root


@pytest.fixture(params=list(TASKS))
def inputs(request, tmp_path) -> Path:
    """:func:`_make_inputs` of the pets, for each task in TASKS."""
    return _make_inputs(tmp_path, TASKS[request.param], pets=True)


@pytest.fixture
def folder_inputs(tmp_path) -> Path:
    """:func:`_make_inputs` of a 3-class folder dataset (STREET): no breeds, no per-breed tables."""
    return _make_inputs(tmp_path, STREET, pets=False)


def plot_args(root: Path) -> list[str]:
    """The plot stage's arguments on ``inputs``: folders in, figures into root/figs."""
    folders = {"live": "live", "evaluation": "evaluation", "predictions": "predictions"}
    args = ["--params", str(root / "params.yaml"), "--models", *MODELS, "--test", str(root / "test.npz")]
    for option, folder in folders.items():
        args += [f"--{option}", str(root / folder)]
    return [*args, "--plots", str(root / "figs"), "--summary", str(root / "test.json")]


def _files(root: Path, model: str = MODELS[1]):
    return model_files(model, root / "live", root / "evaluation", root / "predictions")


def _loaded(root: Path):
    test = load_cache(root / "test.npz")
    score = "dice" if test.classes.binary else "miou"
    predictions = {m: load_predictions(_files(root, m).predictions)[0] for m in MODELS}
    per_image = {m: read_table(_files(root, m).per_image, ("stem",), (score,), (score,)) for m in MODELS}
    return test, score, predictions, per_image


def _error(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_worst_stems_are_the_lowest_score_first_with_ties_by_stem_and_no_score_last():
    table = pd.DataFrame({"stem": ["d", "b", "a", "c", "e", "f"], "dice": [0.9, 0.2, 0.5, 0.2, 0.0, np.nan]})
    assert worst_stems(table, 3, "dice") == ["e", "b", "c"]
    assert worst_stems(table, 10, "dice") == ["e", "b", "c", "a", "d", "f"]


def test_ecdf_gives_the_fraction_at_most_each_distinct_value():
    x, y = ecdf(np.array([0.5, 0.2, 0.5, 0.9]))
    np.testing.assert_array_equal(x, [0.2, 0.5, 0.9])
    np.testing.assert_allclose(y, [0.25, 0.75, 1.0])


def test_breeds_are_ordered_by_their_mean_dice_over_models_worst_first():
    a = pd.DataFrame({"breed": ["pug", "Bengal", "beagle", "Persian"], "dice": [0.9, 0.5, 0.7, 0.6]})
    b = pd.DataFrame({"breed": ["pug", "Bengal", "beagle", "Persian"], "dice": [0.3, 0.9, 0.7, 0.8]})
    # means: pug 0.6, Bengal 0.7, beagle 0.7, Persian 0.7 -> ties by name (upper case sorts first)
    assert breed_order({"a": a, "b": b}) == ["pug", "Bengal", "Persian", "beagle"]


def test_native_photo_is_resized_to_height_and_width():
    photo = native_photo(np.full((16, 16, 3), 77, np.uint8), 20, 30)
    assert photo.shape == (20, 30, 3) and photo.dtype == np.uint8 and (photo == 77).all()


def test_per_breed_labels_give_counts_and_species_colour(inputs):
    score = "dice" if load_cache(inputs / "test.npz").classes.binary else "miou"
    tables = {
        m: read_table(_files(inputs, m).per_breed, ("breed", "species"), ("images", score), (score,)) for m in MODELS
    }
    fig = per_breed_bars(tables, score)
    labels = fig.axes[0].get_yticklabels()
    by_height = sorted(labels, key=lambda label: -label.get_position()[1])  # the worst breed on top
    order = breed_order(tables, score)
    assert [label.get_text() for label in by_height] == [
        f"{b} (n={sum(breed_of(s) == b for s in STEMS)})" for b in order
    ]
    colours = {label.get_text().split(" ")[0]: label.get_color() for label in labels}
    assert colours["Bengal"] != colours["beagle"] and colours["Bengal"] == colours["Persian"]


def test_overlay_grid_draws_each_prediction_at_native_size_with_its_score(inputs):
    test, score, predictions, per_image = _loaded(inputs)
    # Rows in another order than the cache: the score must be looked up by stem, not position.
    per_image = {m: table.iloc[::-1] for m, table in per_image.items()}
    fig = overlay_grid(test, predictions, per_image, [1, 4], score)
    axes = np.array(fig.axes).reshape(2, 4)
    label = "Dice" if score == "dice" else "mIoU"
    for row, i in enumerate((1, 4)):
        truth, photo = test.native[i], native_photo(test.images[i], *SHAPES[i])
        assert axes[row, 0].get_images()[0].get_array().shape == (*SHAPES[i], 3)
        for col, m in enumerate(MODELS, start=2):
            value = per_image[m].set_index("stem").loc[STEMS[i], score]
            assert axes[row, col].get_title() == f"{m}: {label} {value:.3f}"
            expected = outcome_overlay(photo, predictions[m][i], truth, test.classes)
            np.testing.assert_array_equal(axes[row, col].get_images()[0].get_array(), expected)
    # The title says what the figure shows, for every model alike: the split, the size, the colours.
    title = fig.get_suptitle()
    assert title.startswith("2 of 6 test images at their own size: the photo, its ground truth, then each model's")
    assert f"titled with that model's {label} of the image" in title and "wrong pixels purple" in title
    assert "model input (at 16x16 px), upsampled" in title and not any(m in title for m in MODELS)


def test_worst_images_are_each_models_lowest_scores_never_an_image_without_one(inputs):
    test, score, predictions, per_image = _loaded(inputs)
    fig = worst_grid(test, predictions, per_image, 2, score)
    label = "Dice" if score == "dice" else "mIoU"
    expected = []
    for model in MODELS:
        table = per_image[model].set_index("stem")[score]
        worst = table.sort_values(kind="stable").index[:2]  # NaN last: never among the worst
        assert table[list(worst)].notna().all()
        expected += [f"{stem}: {label} {table[stem]:.3f}" for stem in worst]
    assert [ax.get_title() for ax in fig.axes] == expected


def test_the_confusion_matrices_count_native_pixels_and_skip_ignored_ones(inputs):
    test, _, predictions, _ = _loaded(inputs)
    matrices = split_confusion(test, predictions)
    c = test.classes.count
    for model, matrix in matrices.items():
        expected = np.zeros((c, c), np.int64)
        for i in range(len(STEMS)):
            truth, pred = test.native[i], predictions[model][i]
            np.add.at(expected, (truth[truth != IGNORE], pred[truth != IGNORE]), 1)
        np.testing.assert_array_equal(matrix, expected)
    iou, recall = per_class(matrices, test.classes.names), per_class(matrices, test.classes.names, "recall")
    m = matrices["unet"]
    assert iou["unet"]["pet"] == pytest.approx(m[1, 1] / (m[1].sum() + m[:, 1].sum() - m[1, 1]))
    assert recall["unet"]["pet"] == pytest.approx(m[1, 1] / m[1].sum())


def test_plot_stage_writes_every_figure_into_its_folder_and_the_test_scores(inputs):
    assert run_stage(stages.plot.main, plot_args(inputs)) == 0
    assert sorted(p.name for p in (inputs / "figs").iterdir()) == sorted(FIGURES.values())
    assert (inputs / "figs" / "per_breed.png").is_file()  # the pets have breeds
    for name in FIGURES.values():
        with Image.open(inputs / "figs" / name) as img:
            assert img.format == "PNG" and min(img.size) > 100
    scores = json.loads((inputs / "test.json").read_text())
    binary = load_cache(inputs / "test.npz").classes.binary
    # The task's score first: the first columns of `dvc exp show`; a multi-class task's class IoUs after.
    test, _, predictions, _ = _loaded(inputs)
    classes = [] if binary else [f"{CLASS_IOU}{name}" for name in test.classes.names]
    assert list(scores) == [*(HEADLINE_METRICS if binary else MULTICLASS_HEADLINE_METRICS), *classes]
    for key, (model, m) in itertools.product(classes, split_confusion(test, predictions).items()):
        c = test.classes.names.index(key[len(CLASS_IOU) :])
        assert scores[key][model] == pytest.approx(m[c, c] / (m[c].sum() + m[:, c].sum() - m[c, c]), abs=1e-12)
    first = "dice" if binary else "miou"
    assert scores[first] == pytest.approx({"unet": 0.9 if binary else 0.7, "resnet34_unet": 0.8 if binary else 0.6})
    assert list(scores[first]) == list(MODELS) and scores["best_epoch"] == {"unet": 3, "resnet34_unet": 4}


def test_a_folder_dataset_gets_no_per_breed_figure_and_figures_named_by_no_metric(folder_inputs, capsys):
    figs = folder_inputs / "figs"
    figs.mkdir()
    (figs / "per_breed.png").write_bytes(PNG)  # left by an earlier run on the pets
    # A per_breed.csv left by such a run is not read: the test split's breeds decide.
    (folder_inputs / "evaluation" / MODELS[0] / "per_breed.csv").write_text("breed,species,images,miou\nx,cat,1,0.5\n")
    assert run_stage(stages.plot.main, plot_args(folder_inputs)) == 0
    written = sorted(p.name for p in figs.iterdir())
    assert written == sorted(name for key, name in FIGURES.items() if key != "breeds")
    assert not any("dice" in name for name in written)  # a 3-class run's figures hold mIoU
    assert f"wrote {len(FIGURES) - 1} figures" in capsys.readouterr().out


def test_a_folder_datasets_first_class_is_coloured_in_the_overlays(folder_inputs):
    test, score, predictions, per_image = _loaded(folder_inputs)
    fig = overlay_grid(test, predictions, per_image, [0], score)
    photo, truth = native_photo(test.images[0], *SHAPES[0]), test.native[0]
    drawn = fig.axes[1].get_images()[0].get_array()  # the ground truth
    sky = truth == 0
    expected = np.round(0.5 * photo[sky].astype(np.float32) + 0.5 * np.array(STREET.palette[0], np.float32))
    np.testing.assert_array_equal(drawn[sky], expected.astype(np.uint8))
    assert (drawn[sky] != photo[sky]).any()  # the default palette's black darkens the sky: it is drawn
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["ignored: photo", "sky", "road", "car", "wrong (over the predicted class)"]


def _other_stems(path: Path) -> None:
    masks = PackedMasks.pack([np.zeros(s, np.uint8) for s in SHAPES])
    with open(path, "wb") as f:
        np.savez(f, stems=np.array(STEMS[::-1]), **masks.to_arrays("masks"))


def _bad_live(folder: Path) -> None:
    # A dvclive layout whose first metric file lacks its value column.
    (folder / "plots" / "metrics" / "train" / "loss.tsv").write_text("step\tvalue\n0\t1.0\n")


def _remove(path: Path) -> None:
    if path.is_dir():
        import shutil

        shutil.rmtree(path)
    else:
        path.unlink()


@pytest.mark.parametrize(
    "option, write, message",
    [
        ("metrics", lambda p: p.write_text('{"dice": 0.5}'), "missing or malformed"),
        ("metrics", lambda p: p.write_text("{not json"), "not valid JSON"),
        ("metrics", lambda p: p.write_text("[1]"), "not a JSON object"),
        ("per_image", lambda p: p.write_text("stem,dice,miou\nBengal_1,0.5,0.5\n"), "not about the 6 test images"),
        ("per_image", lambda p: p.write_text("stem,iou\nBengal_1,0.5\n"), "lacks column"),
        ("per_image", lambda p: p.write_text("stem,dice,miou\nBengal_1,high,high\n"), "holds a non-number"),
        ("per_breed", lambda p: p.write_text("breed,species,images,dice,miou\nBengal,cat,x,0.5,0.5\n"), "images holds"),
        ("per_breed", lambda p: p.write_text("breed,species,images,dice,miou\nBengal,cat,2,0.5,0.5\n"), "not about"),
        ("per_breed", _remove, "not found"),
        ("predictions", lambda p: p.write_bytes(b"not a zip"), "not a predictions file"),
        ("predictions", _other_stems, "not about the 6 test images"),
        ("predictions", _remove, "predictions not found"),
        ("per_image", _remove, "not found; run the evaluate stages"),
        ("per_image", lambda p: p.write_text(""), "not a CSV"),
        ("live", _remove, "not found; rerun the training stage"),
        ("live", _bad_live, "not a dvclive metric file"),
    ],
)
def test_plot_stage_names_a_bad_input_and_writes_nothing(inputs, capsys, option, write, message):
    bad = getattr(_files(inputs), option)
    write(bad)
    assert run_stage(stages.plot.main, plot_args(inputs)) == 1
    line = _error(capsys)
    assert line.startswith(f"error: {bad}") and message in line  # the file, or one inside the folder
    assert not (inputs / "figs").exists() and not (inputs / "test.json").exists()


def test_predictions_of_another_task_are_refused(inputs, capsys):
    binary = load_cache(inputs / "test.npz").classes.binary
    depth = LABELS if binary else 1  # label maps for a binary test set, bits for a 3-class one
    masks = PackedMasks.pack([np.zeros(s, np.uint8) for s in SHAPES], depth)
    with open(_files(inputs).predictions, "wb") as f:
        np.savez(f, stems=np.array(STEMS), **masks.to_arrays("masks"))
    assert run_stage(stages.plot.main, plot_args(inputs)) == 1
    assert "not about the 6 test images" in _error(capsys)


def test_load_predictions_rejects_offsets_that_do_not_fit_the_shapes(tmp_path):
    masks = PackedMasks.pack([np.ones((4, 4), np.uint8)])
    with open(tmp_path / "cut.npz", "wb") as f:
        np.savez(f, stems=np.array(["a"]), **{**masks.to_arrays("masks"), "masks_shapes": np.array([[8, 8]])})
    with pytest.raises(UserError, match="do not fit together"):
        load_predictions(tmp_path / "cut.npz")


def test_read_metrics_wants_every_headline_score_and_a_tta(inputs):
    binary = load_cache(inputs / "test.npz").classes.binary
    metrics = json.loads(_files(inputs).metrics.read_text())
    key = "dice_at_image_size" if binary else "miou_at_image_size"
    del metrics[key], metrics["tta"]
    (inputs / "m.json").write_text(json.dumps(metrics))
    with pytest.raises(UserError, match=rf"malformed {key}, tta;"):
        read_metrics(inputs / "m.json", 2 if binary else 3)


def test_the_test_scores_sit_side_by_side_each_score_for_every_model_first():
    metrics = {"unet": {"dice": 0.9, "iou": 0.8}, "resnet34_unet": {"dice": 0.8, "iou": 0.7}}
    table = side_by_side(metrics, ("dice", "iou"))
    assert table == {"dice": {"unet": 0.9, "resnet34_unet": 0.8}, "iou": {"unet": 0.8, "resnet34_unet": 0.7}}
    assert list(table["dice"]) == list(MODELS)
