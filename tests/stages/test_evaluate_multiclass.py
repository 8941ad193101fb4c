"""The export and evaluate stages on a 3-class model: metrics keys, tables, label-map predictions, no threshold."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

import stages.evaluate
import stages.export
from pipeline.core.constants import MULTICLASS_HEADLINE_METRICS
from pipeline.core.runner import run_stage
from pipeline.data.build import build_cache
from pipeline.data.cache import load_cache, save_cache
from pipeline.data.classes import Classes, classes_to_json
from pipeline.data.masks import LABELS, PackedMasks
from pipeline.data.synthetic import make_synthetic_folder
from pipeline.evaluate.confusion import confusion_matrix
from pipeline.models.checkpoint import save_checkpoint
from pipeline.models.registry import build_model
from tests.support import SQUARE_32, write_params

# After the headline (MULTICLASS_HEADLINE_METRICS, first and in that order), what else was measured.
DETAIL_KEYS = [
    *("per_class", "miou_per_image", "at_image_size", "images", "threshold", "tta", "image_size"),
    *("resize", "images_per_s", "device", "onnx_max_abs_diff"),
]


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A folder with a 6-image 3-class test cache at 32 px (a folder dataset: no breeds), an untrained 3-class
    UNet checkpoint (seed 0), its ONNX export, and the evaluate stage's outputs under ``evaluate.threshold:
    auto`` with no valid split, run over a per_breed.csv left by an earlier run on the pets."""
    root = tmp_path_factory.mktemp("multiclass")
    make_synthetic_folder(root / "data", 6, seed=0, classes=3)
    test = build_cache(root / "data", [f"shape_{i}" for i in range(6)], 32, "pet", progress=False)
    save_cache(root / "test", test)
    torch.manual_seed(0)
    model = build_model("unet", 3, base_channels=4)
    save_checkpoint(
        root / "unet.pt", "unet", {"base_channels": 4}, model.state_dict(), out_channels=3,
        classes=classes_to_json(test.classes), epoch=2, valid_dice=0.4, valid_miou=0.3, image_size=32, resize=SQUARE_32,
    )  # fmt: skip
    params = write_params(root / "params.yaml", image_size=32, evaluate={"threshold": "auto", "batch_size": 4})
    p = ["--params", str(params)]
    export = ["--checkpoint", str(root / "unet.pt"), "--test", str(root / "test"), "--out", str(root / "unet.onnx")]
    assert run_stage(stages.export.main, [*p, *export]) == 0
    evaluate = [
        "--checkpoint", str(root / "unet.pt"), "--onnx", str(root / "unet.onnx"),
        "--valid", str(root / "no-such-valid"),  # a multi-class model has no threshold to choose on valid
        "--test", str(root / "test"), "--metrics", str(root / "unet.json"),
        "--per-image", str(root / "per_image.csv"), "--per-breed", str(root / "per_breed.csv"),
        "--predictions", str(root / "pred.npz"), "--record", str(root / "unet.eval.json"),
    ]  # fmt: skip
    (root / "per_breed.csv").write_text("breed,species,images,dice,dice_per_image\nBengal,cat,3,0.5,0.5\n")
    assert run_stage(stages.evaluate.main, [*p, *evaluate]) == 0
    return root


def test_multiclass_metrics_keys_and_values(evaluated):
    metrics = json.loads((evaluated / "unet.json").read_text())
    assert list(metrics) == [*MULTICLASS_HEADLINE_METRICS, *DETAIL_KEYS]
    assert metrics["best_valid_miou"] == 0.3 and metrics["best_epoch"] == 2
    assert metrics["threshold"] is None and metrics["tta"] == "none" and metrics["image_size"] == 32
    assert metrics["device"] == "cpu" and metrics["images_per_s"] > 0 and 0 <= metrics["onnx_max_abs_diff"] <= 1e-3
    assert list(metrics["per_class"]) == ["background", "part1", "part2"]
    assert all(set(c) == {"iou", "dice", "precision", "recall", "pixels"} for c in metrics["per_class"].values())
    assert metrics["at_image_size"]["miou_per_image"] is not None and "miou" not in metrics["at_image_size"]
    assert "species" not in metrics  # a folder dataset's are all unknown
    for key in ("miou", "dice", "dice_per_image", "miou_at_image_size", "pixel_accuracy"):
        assert 0 <= metrics[key] <= 1

    # The headline recomputed from the predictions and the cache's native label maps.
    test = load_cache(evaluated / "test")
    with np.load(evaluated / "pred.npz") as data:
        predictions = PackedMasks.from_arrays(data, "masks")
        assert data["stems"].tolist() == test.stems
    assert predictions.depth == LABELS and predictions.shapes.tolist() == test.native.shapes.tolist()
    total = sum(
        confusion_matrix(torch.from_numpy(predictions[i][None]), torch.from_numpy(test.truth(i)[None]), 3)[0]
        for i in range(len(test.stems))
    )
    tp = total.diagonal().double()
    union = total.sum(0) + total.sum(1) - total.diagonal()
    present = union > 0
    assert metrics["miou"] == pytest.approx(float((tp[present] / union[present]).mean()))
    pixels = [c["pixels"] for c in metrics["per_class"].values()]
    assert pixels == total.sum(1).tolist() and sum(pixels) == test.native.shapes.prod(1).sum()


def test_multiclass_tables_and_record(evaluated):
    metrics = json.loads((evaluated / "unet.json").read_text())
    test = load_cache(evaluated / "test")
    per_image = pd.read_csv(evaluated / "per_image.csv")
    counts = [f"{kind}_{name}" for name in test.classes.names for kind in ("tp", "fp", "fn")]
    assert list(per_image.columns) == ["stem", "breed", "species", "width", "height", "miou", "dice", *counts]
    assert per_image["stem"].tolist() == test.stems and set(per_image["breed"]) == {"unknown"}
    assert per_image["miou"].mean() == pytest.approx(metrics["miou_per_image"])
    assert per_image["dice"].mean() == pytest.approx(metrics["dice_per_image"])
    # Each row's miou is that of its own counts; its true pixels are the photo's (nothing ignored here).
    for _, row in per_image.iterrows():
        tp, fp, fn = (np.array([row[f"{kind}_{n}"] for n in test.classes.names]) for kind in ("tp", "fp", "fn"))
        union = tp + fp + fn
        assert row["miou"] == pytest.approx((tp[union > 0] / union[union > 0]).mean())
        assert (tp + fn).sum() == row["width"] * row["height"]
    # A folder dataset has no breeds: no per-breed table, and the earlier run's one is gone.
    assert not (evaluated / "per_breed.csv").exists()
    record = json.loads((evaluated / "unet.eval.json").read_text())
    assert record == {"model": "unet", "image_size": 32, "threshold": None, "tta": "none"}


def test_a_test_cache_of_other_classes_is_one_line(evaluated, tmp_path, capsys):
    test = load_cache(evaluated / "test")
    save_cache(tmp_path / "other", replace(test, classes=Classes(("sky", "road", "car"))))
    args = [
        "--params", str(evaluated / "params.yaml"), "--checkpoint", str(evaluated / "unet.pt"),
        "--onnx", str(evaluated / "unet.onnx"), "--valid", str(tmp_path / "none"), "--test", str(tmp_path / "other"),
        "--metrics", str(tmp_path / "m.json"), "--per-image", str(tmp_path / "i.csv"),
        "--per-breed", str(tmp_path / "b.csv"), "--predictions", str(tmp_path / "p.npz"),
        "--record", str(tmp_path / "r.json"),
    ]  # fmt: skip
    assert run_stage(stages.evaluate.main, args) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: {tmp_path / 'other'}: classes ['sky', 'road', 'car'] but {evaluated / 'unet.pt'} was trained for "
        "['background', 'part1', 'part2']; run dvc repro"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other"]
