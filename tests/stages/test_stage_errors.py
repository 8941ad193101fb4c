"""User-caused errors in the train, evaluate and plot stages: one `error:` line, nothing half-written."""

import json

import numpy as np
import pytest
import torch
import yaml

import stages.evaluate
import stages.plot
import stages.train
from pipeline.core.constants import HEADLINE_METRICS
from pipeline.core.runner import run_stage
from pipeline.data.cache import CachedSplit, save_cache
from pipeline.data.masks import PackedMasks
from pipeline.report.files import FIGURES


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err  # may also hold tqdm progress bars
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    return errors[0]


def _plot_args(root, out, metrics=None, predictions=None):
    """The plot stage's arguments on the ``trained`` fixture (one model), its files linked into the folders the
    stage reads (beside ``out``, where the figures go), with its metrics or predictions replaced."""
    folders = out.parent / "inputs"
    links = {
        folders / "live" / "unet": root / "live",
        folders / "evaluation" / "unet" / "scores.json": metrics or root / "unet.json",
        folders / "evaluation" / "unet" / "per_image.csv": root / "unet_per_image.csv",
        folders / "evaluation" / "unet" / "per_breed.csv": root / "unet_per_breed.csv",
        folders / "predictions" / "unet.npz": predictions or root / "pred.npz",
    }
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(target)
    return out, [
        "--params", str(root / "params.yaml"), "--models", "unet", "--live", str(folders / "live"),
        "--evaluation", str(folders / "evaluation"), "--predictions", str(folders / "predictions"),
        "--test", str(root / "test.npz"), "--plots", str(out), "--summary", str(out.parent / "test.json"),
    ]  # fmt: skip


def test_plot_stage_writes_every_figure(trained, tmp_path):
    out, args = _plot_args(trained, out=tmp_path / "figs")
    assert run_stage(stages.plot.main, args) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FIGURES.values())
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in out.glob("*.png"))
    metrics = json.loads((trained / "unet.json").read_text())
    summary = json.loads((tmp_path / "test.json").read_text())
    assert summary == {key: {"unet": metrics[key]} for key in HEADLINE_METRICS}


def test_plot_stage_checks_all_inputs_before_writing(trained, tmp_path, capsys):
    metrics = tmp_path / "m.json"
    metrics.write_text(json.dumps({"dice": 0.5}))
    out, args = _plot_args(trained, out=tmp_path / "figs", metrics=metrics)
    assert run_stage(stages.plot.main, args) == 1
    assert "missing or malformed iou, dice_per_image, dice_at_image_size" in _one_error_line(capsys)
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
    read = tmp_path / "inputs" / "predictions" / "unet.npz"  # the model's file in the folder the stage was given
    assert f"{read}: not about the" in line and "run dvc repro -f for its evaluate stage" in line
    assert not out.exists()


def test_evaluate_stage_rejects_a_cache_of_another_size(evaluate_args, tmp_path, capsys):
    images = np.zeros((2, 64, 64, 3), np.uint8)
    masks = np.zeros((2, 64, 64), np.uint8)
    split = CachedSplit(images, masks, ["a", "b"], PackedMasks.pack(list(masks)), ["a", "b"], ["cat", "dog"])
    save_cache(tmp_path / "test64.npz", split)
    assert run_stage(stages.evaluate.main, evaluate_args(tmp_path, test=tmp_path / "test64.npz")) == 1
    assert "photos cached at 64x64 px but" in _one_error_line(capsys)
    assert list(tmp_path.glob("unet*")) == [] and not (tmp_path / "pred.npz").exists()


def test_evaluate_stage_rejects_a_corrupt_checkpoint(evaluate_args, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    assert run_stage(stages.evaluate.main, evaluate_args(tmp_path, checkpoint=bad)) == 1
    assert "not a petseg checkpoint" in _one_error_line(capsys)
    assert list(tmp_path.glob("unet*")) == []


@pytest.mark.parametrize("threshold", [0.0, 1.0, "best"])
def test_evaluate_threshold_must_be_strictly_inside_0_1_or_auto(trained, evaluate_args, tmp_path, capsys, threshold):
    params = yaml.safe_load((trained / "params.yaml").read_text())
    params["evaluate"]["threshold"] = threshold
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    assert run_stage(stages.evaluate.main, evaluate_args(tmp_path, params=tmp_path / "params.yaml")) == 1
    line = _one_error_line(capsys)
    assert "evaluate.threshold: must be a number strictly between 0 and 1, or auto" in line


def test_train_stage_rejects_a_mistyped_option_before_creating_the_dvclive_folder(
    trained, train_outputs, tmp_path, capsys
):
    params = yaml.safe_load((trained / "params.yaml").read_text())
    params["unet"]["bilinear"] = "false"  # a string, which Python would take as true
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    args = ["--params", str(tmp_path / "params.yaml"), "--model", "unet", "--train", str(trained / "train.npz")]
    args += ["--valid", str(trained / "valid.npz"), *train_outputs(tmp_path)]
    assert run_stage(stages.train.main, args) == 1
    assert "unet.bilinear: must be a valid boolean, got 'false'" in _one_error_line(capsys)
    assert not (tmp_path / "live").exists() and not (tmp_path / "unet.pt").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine where CUDA is unusable")
@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_device_cuda_without_a_usable_gpu_fails_the_stage_in_one_line(
    trained, train_outputs, evaluate_args, tmp_path, capsys, stage
):
    params = yaml.safe_load((trained / "params.yaml").read_text())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({**params, "device": "cuda"}))
    if stage == "train":
        args = ["--params", str(tmp_path / "params.yaml"), "--model", "unet", "--train", str(trained / "train.npz")]
        args += ["--valid", str(trained / "valid.npz"), *train_outputs(tmp_path)]
        main = stages.train.main
    else:
        args, main = evaluate_args(tmp_path, params=tmp_path / "params.yaml"), stages.evaluate.main
    assert run_stage(main, args) == 1
    line = _one_error_line(capsys)
    assert line.startswith("error: params.yaml: device cuda: CUDA is unusable (") and line.endswith("cpu or auto")
    assert not any(tmp_path.glob("*.pt")) and not any(tmp_path.glob("*.json")) and not (tmp_path / "live").exists()
