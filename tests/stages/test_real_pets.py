"""The stages on real Oxford-IIIT Pet photos from ../shared (skipped when absent)."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

import stages.download
import stages.evaluate
import stages.export
import stages.preprocess
import stages.split
import stages.train
import stages.validate
from pipeline.core.runner import run_stage
from pipeline.data.cache import load_cache
from pipeline.data.decode import load_pair
from pipeline.data.layout import read_stems
from tests.support import preprocess_reports, shipped_params


def test_gif_named_jpg_decodes_to_rgb(pets_mini):
    # Abyssinian_34.jpg is a GIF inside (dataset README); it must decode like any photo.
    image, mask = load_pair(pets_mini, "Abyssinian_34", 64, "pet")
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert image.std() > 10  # a real photo, not a blank fill
    # Its official trimap is all background (value 2), so the binary mask is empty.
    assert mask.shape == (64, 64) and mask.max() == 0


@pytest.mark.slow
def test_stages_on_a_few_real_pets_for_one_epoch(pets_mini, tmp_path):
    # A small real subset in the official layout: 12 trainval and 6 test pairs, plus the GIF pair
    # that is in no list file (it must be ignored by the split).
    src = tmp_path / "src"
    (src / "images").mkdir(parents=True)
    (src / "annotations" / "trimaps").mkdir(parents=True)
    trainval = read_stems(pets_mini / "annotations" / "trainval.txt")[:12]
    test = read_stems(pets_mini / "annotations" / "test.txt")[:6]
    for stem in [*trainval, *test, "Abyssinian_34"]:
        shutil.copy(pets_mini / "images" / f"{stem}.jpg", src / "images")
        shutil.copy(pets_mini / "annotations" / "trimaps" / f"{stem}.png", src / "annotations" / "trimaps")
    for name, stems in (("trainval", trainval), ("test", test), ("list", trainval + test)):
        lines = (pets_mini / "annotations" / f"{name}.txt").read_text().splitlines()
        keep = [line for line in lines if line.startswith("#") or line.split()[0] in stems]
        (src / "annotations" / f"{name}.txt").write_text("\n".join(keep) + "\n")

    params = shipped_params()
    params["data"]["source"] = str(src)
    params.update(image_size=64, epochs=1, batch_size=4)
    params["unet"]["base_channels"] = 4
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    p = ["--params", str(params_file)]
    raw, splits, cache, out = tmp_path / "raw", tmp_path / "splits", tmp_path / "cache", tmp_path / "out"

    inputs, report = tmp_path / "download.json", tmp_path / "data.json"
    assert run_stage(stages.validate.main, [*p, "--download-inputs", str(inputs)]) == 0
    download_args = ["--inputs", str(inputs), "--downloads", str(tmp_path / "downloads"), "--out", str(raw)]
    assert run_stage(stages.download.main, download_args) == 0
    assert run_stage(stages.split.main, [*p, "--raw", str(raw), "--out", str(splits)]) == 0
    preprocess_args = ["--raw", str(raw), "--splits", str(splits), "--out", str(cache), *preprocess_reports(report)]
    assert run_stage(stages.preprocess.main, [*p, *preprocess_args]) == 0
    # Real photos in the official layout: none is skipped.
    assert json.loads(report.read_text())["total"]["skipped"] == 0
    summary = json.loads((splits / "summary.json").read_text())
    assert summary["train"] + summary["valid"] == 12 and summary["test"] == 6
    assert "Abyssinian_34" not in load_cache(cache / "train").stems + load_cache(cache / "test").stems

    train_args = ["--model", "unet", "--train", str(cache / "train"), "--valid", str(cache / "valid")]
    train_args += ["--checkpoint", str(out / "unet.pt"), "--live", str(out / "live"), "--resume", str(out / "r.pt")]
    assert run_stage(stages.train.main, [*p, *train_args]) == 0
    export_args = ["--checkpoint", str(out / "unet.pt"), "--test", str(cache / "test")]
    assert run_stage(stages.export.main, [*p, *export_args, "--out", str(out / "unet.onnx")]) == 0
    eval_args = ["--checkpoint", str(out / "unet.pt"), "--onnx", str(out / "unet.onnx")]
    eval_args += ["--valid", str(cache / "valid"), "--test", str(cache / "test")]
    eval_args += ["--metrics", str(out / "unet.json"), "--per-image", str(out / "img.csv")]
    eval_args += ["--per-breed", str(out / "breed.csv"), "--predictions", str(out / "pred.npz")]
    assert run_stage(stages.evaluate.main, [*p, *eval_args, "--record", str(out / "unet.eval.json")]) == 0

    metrics = json.loads((out / "unet.json").read_text())
    assert metrics["images"] == 6 and metrics["best_epoch"] == 1 and metrics["image_size"] == 64
    assert 0.0 <= metrics["dice"] <= 1.0 and metrics["onnx_max_abs_diff"] <= 1e-3
    # Real photos keep their own sizes, species come from list.txt, breeds from the stems.
    per_image = pd.read_csv(out / "img.csv")
    assert (per_image["width"] != 64).all() and per_image["width"].between(150, 2000).all()
    lines = (src / "annotations" / "list.txt").read_text().splitlines()
    listed = dict(line.split()[::2] for line in lines if not line.startswith("#"))
    expected = ["cat" if listed[stem] == "1" else "dog" for stem in per_image["stem"]]
    assert per_image["species"].tolist() == expected
    assert sum(v["images"] for v in metrics["species"].values()) == 6
