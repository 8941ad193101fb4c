"""The plot stage and its figures, on small hand-made evaluate and training outputs."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import stages.plot
from pipeline.core.constants import HEADLINE_METRICS
from pipeline.core.errors import UserError
from pipeline.core.runner import run_stage
from pipeline.data.cache import CachedSplit, load_cache, save_cache
from pipeline.data.layout import breed_of
from pipeline.data.masks import PackedMasks
from pipeline.report.inputs import load_predictions, read_metrics, read_table
from pipeline.report.mask_figures import native_photo, overlay_grid, worst_stems
from pipeline.report.overlays import FN, FP, TP, error_overlay
from pipeline.report.plots import breed_order, ecdf, per_breed_bars
from pipeline.report.table import side_by_side
from tests.support import write_params

MODELS = ("unet", "resnet34_unet")
STEMS = ["Bengal_1", "Bengal_2", "beagle_1", "beagle_2", "beagle_3", "Persian_7"]
SHAPES = [(20, 30), (24, 18), (16, 16), (30, 20), (18, 26), (22, 22)]  # (height, width), as photos vary
FIGURES = ("curves", "overlays", "worst", "distribution", "breeds", "dice", "confusion", "per-class-iou")
PNG = b"\x89PNG\r\n\x1a\n"


def _dice(pred: np.ndarray, truth: np.ndarray) -> float:
    tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
    return 1.0 if 2 * tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


@pytest.fixture
def inputs(tmp_path):
    """Everything the plot stage reads, for MODELS on 6 test images at 16 px; returns the folder."""
    rng = np.random.default_rng(0)
    truths = []
    for h, w in SHAPES:
        truth = np.zeros((h, w), bool)
        truth[h // 4 : 3 * h // 4, w // 5 : 4 * w // 5] = True
        truths.append(truth)
    species = ["cat" if s[0].isupper() else "dog" for s in STEMS]
    images = rng.integers(0, 256, (len(STEMS), 16, 16, 3), dtype=np.uint8)
    masks = np.zeros((len(STEMS), 16, 16), np.uint8)
    breeds = [breed_of(s) for s in STEMS]
    save_cache(tmp_path / "test.npz", CachedSplit(images, masks, STEMS, PackedMasks.pack(truths), breeds, species))
    for m, model in enumerate(MODELS):
        preds = [np.roll(t, 2 * m + i % 3, axis=1) for i, t in enumerate(truths)]
        with open(tmp_path / f"{model}.npz", "wb") as f:
            np.savez(f, stems=np.array(STEMS), **PackedMasks.pack(preds).to_arrays("masks"))
        dice = [_dice(p, t) for p, t in zip(preds, truths, strict=True)]
        table = pd.DataFrame({"stem": STEMS, "breed": breeds, "species": species, "dice": dice})
        table.to_csv(tmp_path / f"{model}_per_image.csv", index=False)
        per_breed = table.groupby(["breed", "species"], as_index=False).agg(
            images=("stem", "size"), dice=("dice", "mean")
        )
        per_breed.assign(dice_per_image=per_breed["dice"]).to_csv(tmp_path / f"{model}_per_breed.csv", index=False)
        metrics = {"dice": 0.9 - m / 10, "iou": 0.8, "dice_per_image": 0.85, "dice_at_image_size": 0.95}
        metrics |= {"best_valid_dice": 0.9, "best_epoch": 3 + m, "images": len(STEMS), "threshold": 0.5}
        metrics |= {"tta": "none", "image_size": 16}
        (tmp_path / f"{model}.json").write_text(json.dumps(metrics))
        live = tmp_path / "live" / model / "plots" / "metrics"
        for metric, column in (("train/loss", "loss"), ("valid/loss", "loss"), ("valid/dice", "dice")):
            (live / metric).parent.mkdir(parents=True, exist_ok=True)
            pd.DataFrame({"step": [0, 1, 2], column: [0.9, 0.5, 0.4]}).to_csv(
                live / f"{metric}.tsv", sep="\t", index=False
            )
    write_params(tmp_path / "params.yaml", plot={"num_images": 3, "worst": 2, "seed": 0})
    return tmp_path


def plot_args(root, models=MODELS, **replace) -> list[str]:
    """The plot stage's arguments on ``inputs``; ``replace`` swaps one option's values (e.g. predictions=[...])."""
    options = {
        "live": [root / "live" / m for m in models],
        "metrics": [root / f"{m}.json" for m in models],
        "per_image": [root / f"{m}_per_image.csv" for m in models],
        "per_breed": [root / f"{m}_per_breed.csv" for m in models],
        "predictions": [root / f"{m}.npz" for m in models],
    } | replace
    args = ["--params", str(root / "params.yaml"), "--models", *models, "--test", str(root / "test.npz")]
    for option, paths in options.items():
        args += [f"--{option.replace('_', '-')}", *map(str, paths)]
    for name in FIGURES:
        args += [f"--{name}-png", str(root / "figs" / f"{name}.png")]
    return [*args, "--summary", str(root / "figs" / "test.json")]


def _error(capsys) -> str:
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


def test_error_overlay_colours_each_outcome():
    image = np.full((3, 4, 3), 100, np.uint8)
    truth = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], np.uint8)
    pred = np.array([[1, 0, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0]], np.uint8)
    out = error_overlay(image, pred, truth, alpha=0.5)
    expected = np.full((3, 4, 3), 100, np.uint8)  # true negatives keep the photo
    for colour, where in ((TP, [(0, 0), (1, 0)]), (FP, [(0, 2), (1, 2)]), (FN, [(0, 1), (1, 1)])):
        for y, x in where:
            expected[y, x] = np.round(50 + colour / 2)
    np.testing.assert_array_equal(out, expected)
    with pytest.raises(ValueError, match="differ in size"):
        error_overlay(image, pred[:, :3], truth)


def test_worst_stems_are_the_lowest_dice_first_with_ties_by_stem():
    table = pd.DataFrame({"stem": ["d", "b", "a", "c", "e"], "dice": [0.9, 0.2, 0.5, 0.2, 0.0]})
    assert worst_stems(table, 3) == ["e", "b", "c"]
    assert worst_stems(table, 10) == ["e", "b", "c", "a", "d"]


def test_ecdf_gives_the_fraction_at_most_each_distinct_value():
    x, y = ecdf(np.array([0.5, 0.2, 0.5, 0.9]))
    np.testing.assert_array_equal(x, [0.2, 0.5, 0.9])
    np.testing.assert_allclose(y, [0.25, 0.75, 1.0])


def test_breeds_are_ordered_by_their_mean_dice_over_models_worst_first():
    a = pd.DataFrame({"breed": ["pug", "Bengal", "beagle", "Persian"], "dice": [0.9, 0.5, 0.7, 0.6]})
    b = pd.DataFrame({"breed": ["pug", "Bengal", "beagle", "Persian"], "dice": [0.3, 0.9, 0.7, 0.8]})
    # means: pug 0.6, Bengal 0.7, beagle 0.7, Persian 0.7 -> ties by name (upper case sorts first)
    assert breed_order({"a": a, "b": b}) == ["pug", "Bengal", "Persian", "beagle"]


def test_per_breed_labels_give_counts_and_species_colour(inputs):
    tables = {m: read_table(inputs / f"{m}_per_breed.csv", ("breed", "species"), ("images", "dice")) for m in MODELS}
    fig = per_breed_bars(tables)
    labels = fig.axes[0].get_yticklabels()
    order = breed_order(tables)
    # The worst breed is drawn at the top, i.e. its tick has the largest y.
    by_height = sorted(labels, key=lambda label: -label.get_position()[1])
    assert [label.get_text() for label in by_height] == [
        f"{b} (n={sum(breed_of(s) == b for s in STEMS)})" for b in order
    ]
    colours = {label.get_text().split(" ")[0]: label.get_color() for label in labels}
    assert colours["Bengal"] != colours["beagle"] and colours["Bengal"] == colours["Persian"]


def test_native_photo_is_resized_to_height_and_width():
    photo = native_photo(np.full((16, 16, 3), 77, np.uint8), 20, 30)
    assert photo.shape == (20, 30, 3) and photo.dtype == np.uint8 and (photo == 77).all()


def test_overlay_grid_draws_at_native_size_with_each_stems_dice(inputs):
    test = load_cache(inputs / "test.npz")
    predictions = {m: load_predictions(inputs / f"{m}.npz")[0] for m in MODELS}
    # Rows in another order than the cache: the Dice must be looked up by stem, not position.
    per_image = {m: pd.read_csv(inputs / f"{m}_per_image.csv").iloc[::-1] for m in MODELS}
    fig = overlay_grid(test, predictions, per_image, [1, 4])
    axes = np.array(fig.axes).reshape(2, 4)
    for row, i in enumerate((1, 4)):
        assert axes[row, 0].get_images()[0].get_array().shape == (*SHAPES[i], 3)
        for col, m in enumerate(MODELS, start=2):
            dice = per_image[m].set_index("stem").loc[STEMS[i], "dice"]
            assert axes[row, col].get_title() == f"{m}: Dice {dice:.3f}"
    assert "photo shown at 16 px, upsampled" in fig.get_suptitle()


def test_plot_stage_writes_exactly_the_eight_pngs_and_the_test_scores(inputs):
    assert run_stage(stages.plot.main, plot_args(inputs)) == 0
    written = sorted((inputs / "figs").iterdir())
    assert [p.name for p in written] == sorted([*(f"{name}.png" for name in FIGURES), "test.json"])
    assert all(p.read_bytes()[:8] == PNG for p in written if p.suffix == ".png")
    assert json.loads((inputs / "figs" / "test.json").read_text())["dice"] == {"unet": 0.9, "resnet34_unet": 0.8}


def test_plot_stage_rejects_predictions_for_other_stems_and_writes_nothing(inputs, capsys):
    other = inputs / "other.npz"
    masks = PackedMasks.pack([np.zeros(s, np.uint8) for s in SHAPES])
    with open(other, "wb") as f:
        np.savez(f, stems=np.array(STEMS[::-1]), **masks.to_arrays("masks"))
    args = plot_args(inputs, predictions=[inputs / "unet.npz", other])
    assert run_stage(stages.plot.main, args) == 1
    line = _error(capsys)
    assert f"{other}: not about the 6 test images of" in line and "dvc repro -f" in line
    assert not (inputs / "figs").exists()


def _bad_live(folder: Path) -> None:
    # A dvclive layout whose first metric file lacks its value column.
    (folder / "plots" / "metrics" / "train").mkdir(parents=True)
    (folder / "plots" / "metrics" / "train" / "loss.tsv").write_text("step\tvalue\n0\t1.0\n")


@pytest.mark.parametrize(
    "option, write, message",
    [
        ("metrics", lambda p: p.write_text('{"dice": 0.5}'), "missing or malformed iou, dice_per_image"),
        ("metrics", lambda p: p.write_text("{not json"), "not valid JSON"),
        ("metrics", lambda p: p.write_text("[1]"), "not a JSON object"),
        ("per_image", lambda p: p.write_text("stem,dice\nBengal_1,0.5\n"), "not about the 6 test images"),
        ("per_image", lambda p: p.write_text("stem,iou\nBengal_1,0.5\n"), "lacks column dice"),
        ("per_breed", lambda p: p.write_text("breed,species,images,dice\nBengal,cat,x,0.5\n"), "images holds a non"),
        ("predictions", lambda p: p.write_bytes(b"not a zip"), "not a predictions file"),
        ("predictions", lambda p: None, "predictions not found"),
        ("per_image", lambda p: None, "not found; run the evaluate stages"),
        ("per_image", lambda p: p.write_text(""), "not a CSV"),
        ("live", lambda p: None, "not found; rerun the training stage"),
        ("live", _bad_live, "not a dvclive metric file"),
    ],
)
def test_plot_stage_names_a_bad_input_and_writes_nothing(inputs, capsys, option, write, message):
    bad = inputs / "bad"
    write(bad)
    default = plot_args(inputs)
    paths = default[default.index(f"--{option.replace('_', '-')}") + 1 :][: len(MODELS)]
    assert run_stage(stages.plot.main, plot_args(inputs, **{option: [paths[0], bad]})) == 1
    line = _error(capsys)
    assert line.startswith(f"error: {bad}") and message in line  # the file, or one inside the folder
    assert not (inputs / "figs").exists()


def test_plot_stage_wants_one_path_per_model(inputs, capsys):
    args = plot_args(inputs, per_breed=[inputs / "unet_per_breed.csv"])
    assert run_stage(stages.plot.main, args) == 1
    assert "2 --models but" in _error(capsys)
    assert not (inputs / "figs").exists()


def test_load_predictions_rejects_offsets_that_do_not_fit_the_shapes(inputs):
    masks = PackedMasks.pack([np.ones((4, 4), np.uint8)])
    with open(inputs / "cut.npz", "wb") as f:
        np.savez(f, stems=np.array(["a"]), **{**masks.to_arrays("masks"), "masks_shapes": np.array([[8, 8]])})
    with pytest.raises(UserError, match="do not fit together"):
        load_predictions(inputs / "cut.npz")


def test_read_metrics_wants_every_headline_score_and_a_tta(inputs):
    metrics = json.loads((inputs / "unet.json").read_text())
    del metrics["dice_at_image_size"], metrics["tta"]
    (inputs / "m.json").write_text(json.dumps(metrics))
    with pytest.raises(UserError, match=r"malformed dice_at_image_size, tta;"):
        read_metrics(inputs / "m.json")


def test_the_test_scores_sit_side_by_side_each_score_for_every_model_first(inputs):
    metrics = {m: read_metrics(inputs / f"{m}.json") for m in MODELS}
    table = side_by_side(metrics)
    assert list(table) == list(HEADLINE_METRICS)  # dice first: the first columns of `dvc exp show`
    assert table["dice"] == {"unet": 0.9, "resnet34_unet": 0.8} and list(table["dice"]) == list(MODELS)
    assert table["best_epoch"] == {"unet": 3, "resnet34_unet": 4}
