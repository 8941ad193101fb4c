"""User-caused errors in the train, evaluate and plot stages: one `error:` line, nothing half-written."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

import stages.evaluate
import stages.export
import stages.plot
import stages.preprocess
import stages.train
from pipeline.core.errors import run_stage
from pipeline.data.build import build_cache
from pipeline.data.cache import CachedSplit, save_cache
from pipeline.data.decode import load_pair
from pipeline.data.masks import PackedMasks
from pipeline.data.split import make_split
from pipeline.models.registry import build_model
from tests.conftest import REPO


@pytest.fixture(scope="module")
def trained(synthetic_root, tmp_path_factory):
    """Caches at 32 px, a 1-epoch UNet, its metrics and predictions, and a params file."""
    root = tmp_path_factory.mktemp("trained")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(image_size=32, epochs=1, batch_size=4)
    params["unet"]["base_channels"] = 4
    params["plot"]["num_images"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    split = make_split(synthetic_root, 0.25, seed=0)
    for name in ("train", "valid", "test"):
        save_cache(root / f"{name}.npz", build_cache(synthetic_root, getattr(split, name), 32, "pet", progress=False))
    p = ["--params", str(root / "params.yaml")]
    train = ["--model", "unet", "--train", str(root / "train.npz"), "--valid", str(root / "valid.npz")]
    assert run_stage(stages.train.main, [*p, *train, *train_outputs(root)]) == 0
    export = ["--checkpoint", str(root / "unet.pt"), "--test", str(root / "test.npz"), "--out", str(root / "unet.onnx")]
    assert run_stage(stages.export.main, [*p, *export]) == 0
    assert run_stage(stages.evaluate.main, [*p, *evaluate_args(root, root)]) == 0
    return root


def train_outputs(root):
    return ["--checkpoint", str(root / "unet.pt"), "--live", str(root / "live"), "--resume", str(root / "r.pt")]


def evaluate_args(trained, out, checkpoint=None, test=None, params=None) -> list[str]:
    """Arguments of the evaluate stage on the ``trained`` fixture, writing into ``out``."""
    return [
        "--params", str(params or trained / "params.yaml"), "--checkpoint", str(checkpoint or trained / "unet.pt"),
        "--onnx", str(trained / "unet.onnx"), "--valid", str(trained / "valid.npz"),
        "--test", str(test or trained / "test.npz"), "--metrics", str(out / "unet.json"),
        "--per-image", str(out / "unet_per_image.csv"), "--per-breed", str(out / "unet_per_breed.csv"),
        "--predictions", str(out / "pred.npz"), "--record", str(out / "unet.eval.json"),
    ]  # fmt: skip


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err  # may also hold tqdm progress bars
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _plot_args(root, out=None, metrics=None, predictions=None):
    """The plot stage's arguments on the ``trained`` fixture (one model), writing the figures into ``out``."""
    out = out or root / "figs"
    figures = ("curves", "overlays", "worst", "distribution", "breeds", "dice")
    return out, [
        "--params", str(root / "params.yaml"), "--models", "unet", "--live", str(root / "live"),
        "--metrics", str(metrics or root / "unet.json"), "--per-image", str(root / "unet_per_image.csv"),
        "--per-breed", str(root / "unet_per_breed.csv"), "--predictions", str(predictions or root / "pred.npz"),
        "--test", str(root / "test.npz"), *[a for f in figures for a in (f"--{f}-png", str(out / f"{f}.png"))],
    ]  # fmt: skip


def test_plot_stage_writes_six_pngs(trained):
    out, args = _plot_args(trained)
    assert run_stage(stages.plot.main, args) == 0
    names = ["breeds", "curves", "dice", "distribution", "overlays", "worst"]
    assert sorted(p.name for p in out.iterdir()) == [f"{n}.png" for n in names]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in out.iterdir())


def test_plot_stage_checks_all_inputs_before_writing(trained, tmp_path, capsys):
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"dice": 0.5}))
    out, args = _plot_args(trained, out=tmp_path / "figs", metrics=metrics)
    assert run_stage(stages.plot.main, args) == 1
    assert "missing or malformed dice_per_image, iou, at_image_size.dice, images" in _one_error_line(capsys)
    assert not out.exists()

    broken = tmp_path / "pred.npz"
    broken.write_bytes(b"not a zip")
    _, args = _plot_args(trained, out=out, predictions=broken)
    assert run_stage(stages.plot.main, args) == 1
    assert "not a predictions file" in _one_error_line(capsys)
    assert not out.exists()


def test_plot_stage_rejects_predictions_of_another_test_set(trained, tmp_path, capsys):
    with np.load(trained / "pred.npz") as data:
        arrays = dict(data)
    arrays["stems"] = arrays["stems"][::-1]
    other = tmp_path / "pred.npz"
    with open(other, "wb") as f:
        np.savez(f, **arrays)
    out, args = _plot_args(trained, out=tmp_path / "figs", predictions=other)
    assert run_stage(stages.plot.main, args) == 1
    line = _one_error_line(capsys)
    assert f"{other}: not about the" in line and "run dvc repro -f for its evaluate stage" in line
    assert not out.exists()


def test_evaluate_stage_rejects_a_cache_of_another_size(trained, tmp_path, capsys):
    images = np.zeros((2, 64, 64, 3), np.uint8)
    masks = np.zeros((2, 64, 64), np.uint8)
    split = CachedSplit(images, masks, ["a", "b"], PackedMasks.pack(list(masks)), ["a", "b"], ["cat", "dog"])
    save_cache(tmp_path / "test64.npz", split)
    assert run_stage(stages.evaluate.main, evaluate_args(trained, tmp_path, test=tmp_path / "test64.npz")) == 1
    assert "images are 64 px but" in _one_error_line(capsys)
    assert list(tmp_path.glob("unet*")) == [] and not (tmp_path / "pred.npz").exists()


def test_evaluate_stage_rejects_a_corrupt_checkpoint(trained, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    assert run_stage(stages.evaluate.main, evaluate_args(trained, tmp_path, checkpoint=bad)) == 1
    assert "not a petseg checkpoint" in _one_error_line(capsys)
    assert list(tmp_path.glob("unet*")) == []


@pytest.mark.parametrize("threshold", [0.0, 1.0, "best"])
def test_evaluate_threshold_must_be_strictly_inside_0_1_or_auto(trained, tmp_path, capsys, threshold):
    params = yaml.safe_load((trained / "params.yaml").read_text())
    params["evaluate"]["threshold"] = threshold
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage(stages.evaluate.main, evaluate_args(trained, tmp_path, params=tmp_path / "params.yaml")) == 1
    line = _one_error_line(capsys)
    assert "evaluate.threshold: must be a number strictly between 0 and 1, or auto" in line


def test_train_stage_rejects_a_mistyped_option_before_creating_the_dvclive_folder(trained, tmp_path, capsys):
    params = yaml.safe_load((trained / "params.yaml").read_text())
    params["unet"]["bilinear"] = "false"  # a string, which Python would take as true
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--params", str(tmp_path / "params.yaml"), "--model", "unet", "--train", str(trained / "train.npz")]
    args += ["--valid", str(trained / "valid.npz"), *train_outputs(tmp_path)]
    assert run_stage(stages.train.main, args) == 1
    assert "unet.bilinear: must be a valid boolean, got 'false'" in _one_error_line(capsys)
    assert not (tmp_path / "live").exists() and not (tmp_path / "unet.pt").exists()


def test_model_options_accept_a_list_for_a_tuple_default():
    assert build_model("resnet34_unet", decoder_channels=[8, 8, 8, 4, 4]) is not None


def test_palette_trimap_keeps_its_label_values(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "trimaps").mkdir(parents=True)
    Image.new("RGB", (32, 32), (200, 100, 50)).save(tmp_path / "images" / "x.jpg")
    labels = np.full((32, 32), 2, np.uint8)
    labels[8:24, 8:24] = 1
    trimap = Image.fromarray(labels, mode="L").convert("P")
    # A palette whose colours have nothing to do with the indices: only the indices are labels.
    trimap.putpalette([255, 255, 255, 0, 0, 0, 10, 200, 10, 90, 90, 90] + [0] * 756)
    trimap.save(tmp_path / "annotations" / "trimaps" / "x.png")
    _, mask = load_pair(tmp_path, "x", 32, "pet")
    assert mask.sum() == 16 * 16 and mask[8:24, 8:24].all()
