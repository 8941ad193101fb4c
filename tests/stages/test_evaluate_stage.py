"""The evaluate stage on a real (tiny) trained model: files, keys, threshold from valid, TTA."""

import json

import numpy as np
import onnx
import pandas as pd
import pytest
import yaml
from onnx import TensorProto, helper

import stages.evaluate
from pipeline.core.constants import HEADLINE_METRICS
from pipeline.core.runner import run_stage
from pipeline.data.cache import load_cache, save_cache
from pipeline.data.masks import PackedMasks

# After the headline a reviewer compares (HEADLINE_METRICS, first and in that order), what else was measured.
DETAIL_KEYS = [
    "per_class", "dice_per_image_median", "pixel_accuracy", "at_image_size", "species", "images", "threshold", "tta",
    "image_size", "resize", "images_per_s", "device", "onnx_max_abs_diff",
]  # fmt: skip


def _evaluate(trained, evaluate_args, out, valid=None, **evaluate):
    """Run the evaluate stage with ``evaluate.*`` overrides (and another valid cache); return its metrics."""
    params = yaml.safe_load((trained / "params.yaml").read_text())
    params["evaluate"].update(evaluate)
    (out / "params.yaml").write_text(yaml.safe_dump(params))
    args = evaluate_args(out, params=out / "params.yaml")
    if valid is not None:
        args[args.index("--valid") + 1] = str(valid)
    assert run_stage(stages.evaluate.main, args) == 0
    return json.loads((out / "unet.json").read_text())


def test_evaluate_writes_every_key_and_file(trained):
    metrics = json.loads((trained / "unet.json").read_text())
    assert list(metrics) == [*HEADLINE_METRICS, *DETAIL_KEYS]
    assert set(metrics["at_image_size"]) == {"iou", "dice_per_image", "dice_per_image_median", "pixel_accuracy"}
    # Per class from the same matrices as the headline: the pet's Dice and IoU are the headline's.
    assert list(metrics["per_class"]) == ["background", "pet"]
    pet = metrics["per_class"]["pet"]
    assert set(pet) == {"iou", "dice", "precision", "recall", "pixels"}
    assert (pet["dice"], pet["iou"]) == (metrics["dice"], metrics["iou"])
    assert set(metrics["species"]) == {"cat", "dog"}  # synthetic stems are Synthcat_* / synthdog_*
    assert sum(s["images"] for s in metrics["species"].values()) == metrics["images"]
    assert metrics["device"] == "cpu" and metrics["images_per_s"] > 0 and metrics["tta"] == "none"
    assert metrics["threshold"] == 0.5 and 0 <= metrics["onnx_max_abs_diff"] <= 1e-3

    test = load_cache(trained / "test.npz")
    per_image = pd.read_csv(trained / "unet_per_image.csv")
    assert per_image["stem"].tolist() == test.stems
    assert per_image[["height", "width"]].values.tolist() == test.native.shapes.tolist()
    assert per_image["dice"].mean() == pytest.approx(metrics["dice_per_image"])
    per_breed = pd.read_csv(trained / "unet_per_breed.csv")
    assert sorted(per_breed["breed"]) == ["Synthcat", "synthdog"] and per_breed["images"].sum() == len(test.stems)

    record = json.loads((trained / "unet.eval.json").read_text())
    assert record == {"model": "unet", "image_size": 32, "threshold": 0.5, "tta": "none"}
    with np.load(trained / "pred.npz") as data:
        predictions = PackedMasks.from_arrays(data, "masks")
        assert data["stems"].tolist() == test.stems
    assert predictions.shapes.tolist() == test.native.shapes.tolist()


def test_auto_threshold_is_chosen_on_valid_not_test(trained, evaluate_args, tmp_path):
    # Two doctored valid splits: every pixel pet (favours low thresholds) and none (favours high).
    valid = load_cache(trained / "valid.npz")
    picked = {}
    for name, value in (("all_pet", 1), ("no_pet", 0)):
        masks = np.full_like(valid.masks, value)
        native = PackedMasks.pack([np.full(tuple(s), value, np.uint8) for s in valid.native.shapes])
        doctored = valid.__class__(valid.images, masks, valid.stems, native, valid.breeds, valid.species)
        save_cache(tmp_path / f"{name}.npz", doctored)
        out = tmp_path / name
        out.mkdir()
        metrics = _evaluate(trained, evaluate_args, out, threshold="auto", valid=tmp_path / f"{name}.npz")
        picked[name] = metrics["threshold"]
        assert json.loads((out / "unet.eval.json").read_text())["threshold"] == picked[name]
    assert picked["all_pet"] < picked["no_pet"]
    assert {picked["all_pet"], picked["no_pet"]} <= {round(0.05 * k, 2) for k in range(1, 20)}


def test_hflip_tta_is_recorded_and_changes_the_scores(trained, evaluate_args, tmp_path):
    plain = json.loads((trained / "unet.json").read_text())
    tta = _evaluate(trained, evaluate_args, tmp_path, tta="hflip")
    assert tta["tta"] == "hflip" and json.loads((tmp_path / "unet.eval.json").read_text())["tta"] == "hflip"
    assert tta["dice"] != plain["dice"]
    assert tta["images"] == plain["images"]


def test_an_onnx_without_its_parity_record_is_one_line_and_nothing_is_written(evaluate_args, tmp_path, capsys):
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])  # fmt: skip
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    args = evaluate_args(tmp_path)
    args[args.index("--onnx") + 1] = str(tmp_path / "other.onnx")
    assert run_stage(stages.evaluate.main, args) == 1
    err = capsys.readouterr().err
    expected = f"error: {tmp_path / 'other.onnx'}: no onnx_max_abs_diff in its metadata; run `dvc repro -f`"
    assert [line[: len(expected)] for line in err.splitlines() if line.startswith("error: ")] == [expected]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.onnx"]
