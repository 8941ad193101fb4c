"""End to end through the real `dvc` CLI on a temporary copy of the repository (synthetic data)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
ALL_STAGES = {
    "download",
    "split",
    "preprocess",
    "train-unet",
    "train-resnet34unet",
    "evaluate-unet",
    "evaluate-resnet34unet",
    "plot",
}
TINY = {
    "data": {"source": "synthetic", "synthetic_images": 16},
    "image_size": 32,
    "epochs": 1,
    "batch_size": 4,
    "unet": {"base_channels": 4},
    "resnet34_unet": {"decoder_channels": [8, 8, 8, 4, 4]},
    "plot": {"num_images": 2},
}


def run(repo: Path, *args: str) -> str:
    # The stages run `python`: put this interpreter's bin first so they get the same environment.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def stages_run(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


def merge(base: dict, override: dict) -> dict:
    for key, value in override.items():
        base[key] = merge(base[key], value) if isinstance(value, dict) else value
    return base


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repo with the project's code, tiny synthetic params, after one `dvc repro`."""
    if not DVC.exists():
        pytest.fail(f"dvc not installed beside {sys.executable}; run the README set-up")
    repo = tmp_path_factory.mktemp("repo")
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO / name, repo / name)
    params = merge(yaml.safe_load((repo / "params.yaml").read_text()), TINY)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "ci@petseg.invalid")
    run(repo, "git", "config", "user.name", "petseg CI")
    run(repo, str(DVC), "init", "-q")
    # A clone always has a commit; dvclive 3.49 fails in a repo without one (scm.get_rev()).
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "project")
    out = run(repo, str(DVC), "repro")
    assert stages_run(out) == ALL_STAGES
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline")
    return repo


def test_repro_writes_metrics_and_plots_for_both_models(repo):
    for model in ("unet", "resnet34_unet"):
        metrics = json.loads((repo / "metrics" / f"{model}.json").read_text())
        assert metrics["model"] == model
        assert metrics["num_images"] == 8  # synthetic: every other image is in test.txt
        for key in ("dice", "dice_per_image", "iou", "pixel_accuracy", "best_valid_dice"):
            assert 0.0 <= metrics[key] <= 1.0
        assert (repo / "models" / f"{model}.pt").stat().st_size > 0
        assert (repo / "live" / model / "plots" / "metrics" / "valid" / "dice.tsv").exists()
    for png in ("learning_curves", "predictions", "test_dice"):
        assert (repo / "plots" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = json.loads(run(repo, str(DVC), "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    assert {"metrics/unet.json", "metrics/resnet34_unet.json"} <= set(files)
    plots = json.loads(run(repo, str(DVC), "plots", "show", "--json"))
    assert {"Valid Dice", "Train loss", "Valid loss"} <= set(plots["data"])
    # Nothing left to do: the lock file matches the workspace.
    assert stages_run(run(repo, str(DVC), "repro")) == set()


def test_experiments_rerun_exactly_the_affected_stages(repo):
    out = run(repo, str(DVC), "exp", "run", "-S", "lr=3e-4")
    assert stages_run(out) == {"train-unet", "train-resnet34unet", "evaluate-unet", "evaluate-resnet34unet", "plot"}
    diff = json.loads(run(repo, str(DVC), "metrics", "diff", "--all", "--json"))
    assert {"metrics/unet.json", "metrics/resnet34_unet.json"} <= set(diff)
    assert "dice" in diff["metrics/unet.json"] and "dice" in diff["metrics/resnet34_unet.json"]

    out = run(repo, str(DVC), "exp", "run", "-S", "unet.base_channels=6")
    assert stages_run(out) == {"train-unet", "evaluate-unet", "plot"}

    out = run(repo, str(DVC), "exp", "run", "-S", "plot.num_images=3")
    assert stages_run(out) == {"plot"}

    # plot follows only if a tiny model's masks change at the new threshold (DVC skips it otherwise).
    out = run(repo, str(DVC), "exp", "run", "-S", "evaluate.threshold=0.4")
    assert (
        {"evaluate-unet", "evaluate-resnet34unet"}
        <= stages_run(out)
        <= {"evaluate-unet", "evaluate-resnet34unet", "plot"}
    )

    out = run(repo, str(DVC), "exp", "run", "-S", "image_size=64")
    assert stages_run(out) == ALL_STAGES - {"download", "split"}
    assert json.loads((repo / "metrics" / "unet.json").read_text())["image_size"] == 64

    shown = run(repo, str(DVC), "exp", "show", "--csv")
    assert "metrics/unet.json:dice" in shown


def test_a_bad_param_fails_the_stage_with_one_line(repo):
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run(
        [str(DVC), "exp", "run", "-S", "loss=focal"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "error: params.yaml: loss must be one of bce_dice, dice, bce; got 'focal'" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
