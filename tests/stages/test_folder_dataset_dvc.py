"""A user's folder of images and label masks with four classes, an ignore region and one bad mask, through
the whole pipeline with the dvc CLI at tiny settings, then `petseg predict` on one of its photos."""

import json
import subprocess
import sys

import numpy as np
import pytest
import yaml
from PIL import Image

from pipeline.data.synthetic import make_synthetic_folder
from pipeline.report.files import FIGURES
from tests.support import ALL_STAGES, DVC, TINY, dvc_env, new_project, run, stages_run

pytestmark = pytest.mark.e2e

NAMES = ["background", "part1", "part2", "part3"]


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """The finished tiny pipeline on a 4-class folder (20 pairs; one with a mask value outside the classes,
    one with an ignored band), and the folder."""
    root = tmp_path_factory.mktemp("folder")
    data = root / "shapes"
    make_synthetic_folder(data, 20, seed=0, classes=4)
    masks = sorted((data / "masks").glob("*.png"))
    with Image.open(masks[0]) as img:
        bad = np.array(img)
    bad[0, 0] = 6  # no class 6: the pair is skipped as bad_mask_values
    Image.fromarray(bad).save(masks[0])
    for mask in masks[1:]:
        with Image.open(mask) as img:
            labels = np.array(img)
        labels[:, :8] = 255  # classes.yaml's ignore_index: in no loss and no metric
        Image.fromarray(labels).save(mask)
    # Kept aspect (photos 96..160 px a side, short side 32, canvas 64), balanced classes, two crops an image,
    # and 32-pixel sliding windows: a user's own data the way the issue asks, through every stage.
    params = {
        **TINY,
        "data": {"source": str(data), "max_bad_fraction": 0.1},
        "preprocess": {"resize": "keep_aspect"},
        "class_weights": "median_frequency",
        "train": {"crops_per_image": 2},
        "evaluate": {"window": 32},
    }
    repo = new_project(root / "repo", params)
    output = run(repo, "dvc", "repro")
    assert stages_run(output) == ALL_STAGES
    return repo, data, masks[0].stem


def test_a_folder_dataset_runs_end_to_end_with_per_class_metrics(folder_run):
    repo, _, bad = folder_run
    assert json.loads((repo / "metrics" / "skipped.json").read_text()) == {"skipped": 1}
    report = json.loads((repo / "metrics" / "data.json").read_text())
    assert bad in json.dumps(report) and "bad_mask_values" in json.dumps(report)
    weights = {name: entry["median_frequency"] for name, entry in report["train_classes"].items()}
    assert list(weights) == NAMES and min(weights.values()) > 0 and weights["background"] < 1 < weights["part3"]
    for model in ("unet", "resnet34_unet"):
        # No breeds in a folder dataset: no per-breed table and no species breakdown.
        evaluation = repo / "metrics" / "evaluation" / model
        assert sorted(p.name for p in evaluation.iterdir()) == ["per_image.csv", "scores.json"]
        metrics = json.loads((evaluation / "scores.json").read_text())
        assert list(metrics["per_class"]) == NAMES and "species" not in metrics
        for name in NAMES:
            assert set(metrics["per_class"][name]) == {"iou", "dice", "precision", "recall", "pixels"}
        present = [v["iou"] for v in metrics["per_class"].values() if v["iou"] is not None]
        assert metrics["miou"] == pytest.approx(float(np.mean(present)), abs=1e-12)
        assert 0.0 <= metrics["pixel_accuracy"] <= 1.0 and "best_valid_miou" in metrics
        assert metrics["resize"] == {"mode": "keep_aspect", "side": 32}
    summary = json.loads((repo / "metrics" / "test.json").read_text())
    assert list(summary)[0] == "miou" and set(summary["miou"]) == {"unet", "resnet34_unet"}
    # Each class's IoU, last, as the evaluate stage measured it: `dvc exp show` and `petseg seeds` see each class.
    assert list(summary)[-len(NAMES) :] == [f"iou_{name}" for name in NAMES]
    for model in ("unet", "resnet34_unet"):
        scores = json.loads((repo / "metrics" / "evaluation" / model / "scores.json").read_text())
        for name in NAMES:
            assert summary[f"iou_{name}"][model] == pytest.approx(scores["per_class"][name]["iou"], abs=1e-12)
    # Every figure but the per-breed one, none named after a Dice it does not show.
    figures = sorted(p.name for p in (repo / "plots").iterdir())
    assert figures == sorted(name for key, name in FIGURES.items() if key != "breeds")
    assert not [name for name in figures if "dice" in name]
    for png in figures:
        assert (repo / "plots" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # task reruns preprocess onward only; on a folder dataset, trimap fails first, in one line.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump({**params, "task": "trimap"}, sort_keys=False))
    done = subprocess.run([str(DVC), "repro"], cwd=repo, env=dvc_env(), capture_output=True, text=True)
    errors = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("error: ")]
    assert done.returncode != 0 and len(errors) == 1 and "set task: auto" in errors[0]
    assert "Running stage 'download'" not in done.stdout and "Running stage 'split'" not in done.stdout


def test_predict_writes_class_indices_at_the_photos_size(folder_run, tmp_path):
    repo, data, _ = folder_run
    photo = sorted((data / "images").glob("*.jpg"))[1]
    for weights in ("unet.pt", "unet.onnx"):
        out = tmp_path / weights
        command = [sys.executable, "-m", "pipeline", "predict", "--weights", str(repo / "models" / weights)]
        done = subprocess.run([*command, str(photo), "--out", str(out)], cwd=repo, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        with Image.open(out / f"{photo.stem}_mask.png") as mask, Image.open(photo) as image:
            assert mask.mode == "P" and mask.size == image.size
            assert set(np.unique(np.array(mask))) <= set(range(len(NAMES)))
        assert (out / f"{photo.stem}_overlay.png").exists()
