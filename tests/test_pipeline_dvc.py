"""End to end through the real `dvc` CLI on a temporary copy of the repository (synthetic data)."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from pipeline.evaluate.record import eval_record_path
from tests.conftest import REPO

BIN = Path(sys.executable).parent
DVC = BIN / "dvc"
ALL_STAGES = {
    "validate",
    "download",
    "split",
    "preprocess",
    "train-unet",
    "train-resnet34unet",
    "export-unet",
    "export-resnet34unet",
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
    "export": {"check_images": 2},
    "plot": {"num_images": 2, "worst": 3},
}
PNGS = ("learning_curves", "overlays", "worst", "dice_distribution", "per_breed", "test_dice")


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
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # the project's cache.type
    # A clone always has a commit; dvclive 3.49 fails in a repo without one (scm.get_rev()).
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "project")
    out = run(repo, str(DVC), "repro")
    assert stages_run(out) == ALL_STAGES
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline")
    return repo


def test_repro_writes_metrics_models_and_plots_for_both_models(repo):
    for model in ("unet", "resnet34_unet"):
        metrics = json.loads((repo / "metrics" / f"{model}.json").read_text())
        assert metrics["images"] == 8  # synthetic: every other image is in test.txt
        for key in ("dice", "dice_per_image", "iou", "pixel_accuracy", "best_valid_dice"):
            assert 0.0 <= metrics[key] <= 1.0
        assert metrics["onnx_max_abs_diff"] <= 1e-3
        # The record petseg predict looks for beside the weights (the path is in dvc.yaml).
        record = json.loads(eval_record_path(repo / "models" / f"{model}.pt").read_text())
        assert record["model"] == model and record["threshold"] == metrics["threshold"]
        for name in (f"models/{model}.pt", f"models/{model}.onnx", f"metrics/{model}_per_image.csv"):
            assert (repo / name).stat().st_size > 0
        assert (repo / "live" / model / "plots" / "metrics" / "valid" / "dice.tsv").exists()
    for png in PNGS:
        assert (repo / "plots" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = json.loads(run(repo, str(DVC), "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    assert {"metrics/unet.json", "metrics/resnet34_unet.json"} <= set(files)
    plots = json.loads(run(repo, str(DVC), "plots", "show", "--json"))
    assert {"Valid Dice", "Train loss", "Valid loss"} <= set(plots["data"])
    assert {f"plots/{png}.png" for png in PNGS} <= set(plots["data"])
    per_image = plots["data"]["Test Dice per image vs pet fraction (native resolution)"][0]["content"]
    assert "pet_fraction" in json.dumps(per_image)  # the CSV is drawn, with its columns
    # The models are declared artifacts: once a version is registered with a GTO-style git tag,
    # `dvc artifacts get` fetches the file by name, as it was at that commit.
    run(repo, "git", "tag", "-a", "unet-onnx@v0.0.1", "-m", "Registering artifact unet-onnx version 0.0.1")
    got = repo.parent / "got.onnx"
    run(repo, str(DVC), "artifacts", "get", str(repo), "unet-onnx", "-o", str(got))
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert hashlib.md5(got.read_bytes()).hexdigest() == lock["stages"]["export-unet"]["outs"][0]["md5"]
    # Nothing left to do: the lock file matches the workspace.
    assert stages_run(run(repo, str(DVC), "repro")) == set()


def test_push_then_pull_into_a_second_clone_leaves_nothing_to_run(repo, tmp_path):
    # A local folder stands in for S3 and the like: the same `dvc push` / `dvc pull`.
    run(repo, str(DVC), "remote", "add", "-d", "store", str(tmp_path / "remote"))
    run(repo, "git", "commit", "-qam", "a DVC remote")
    assert "files pushed" in run(repo, str(DVC), "push")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    run(clone, str(DVC), "pull")
    for name in (
        "models/unet.pt",
        "models/resnet34_unet.onnx",
        "data/raw/images.tar.gz",
        "data/raw/annotations.tar.gz",
        "data/predictions/unet.npz",
    ):
        assert (clone / name).read_bytes() == (repo / name).read_bytes(), name
    # The raw data is the two archives DVC tracks, not thousands of files.
    assert sorted(p.name for p in (clone / "data" / "raw").iterdir()) == ["annotations.tar.gz", "images.tar.gz"]
    # cache.type (.dvc/config): checked out as links into the clone's cache, not copies.
    for name in ("data/raw/images.tar.gz", "data/cache/train/images.npy", "models/unet.pt"):
        linked = (clone / name).stat().st_nlink >= 2
        assert linked or _reflinks(tmp_path), f"{name} was copied out of the cache"
        assert not linked or (clone / name).stat().st_mode & 0o222 == 0  # DVC makes its links read-only
    assert stages_run(run(clone, str(DVC), "repro")) == set()


def _reflinks(folder: Path) -> bool:
    """Whether ``folder``'s file system makes copy-on-write clones (then DVC uses those, not links)."""
    (folder / "reflink-probe").write_bytes(b"x")
    probe = subprocess.run(["cp", "--reflink=always", folder / "reflink-probe", folder / "reflink-clone"])
    return probe.returncode == 0


def test_experiments_rerun_exactly_the_affected_stages(repo):
    out = run(repo, str(DVC), "exp", "run", "-S", "lr=3e-4")
    assert stages_run(out) == ALL_STAGES - {"download", "split", "preprocess"}
    diff = json.loads(run(repo, str(DVC), "metrics", "diff", "--all", "--json"))
    assert {"metrics/unet.json", "metrics/resnet34_unet.json"} <= set(diff)
    assert "dice" in diff["metrics/unet.json"] and "dice" in diff["metrics/resnet34_unet.json"]

    # Back to the baseline lr: the run-cache restores the finished trainings instead of rerunning
    # them (the resume state is kept out of DVC's outputs so that this still works).
    lr = yaml.safe_load((REPO / "params.yaml").read_text())["lr"]
    out = run(repo, str(DVC), "exp", "run", "-S", f"lr={lr}")
    assert not stages_run(out) & {"train-unet", "train-resnet34unet"}
    assert "Stage 'train-unet' is cached - skipping run" in out

    out = run(repo, str(DVC), "exp", "run", "-S", "unet.base_channels=6")
    # validate follows every params change (it checks the whole file); then only what the key decides.
    assert stages_run(out) == {"validate", "train-unet", "export-unet", "evaluate-unet", "plot"}

    out = run(repo, str(DVC), "exp", "run", "-S", "evaluate.tta=hflip")
    assert stages_run(out) == {"validate", "evaluate-unet", "evaluate-resnet34unet", "plot"}
    assert json.loads((repo / "metrics" / "unet.json").read_text())["tta"] == "hflip"

    # Only export and what depends on it (evaluate reads the parity it records, plot reads evaluate).
    out = run(repo, str(DVC), "exp", "run", "-S", "export.check_images=3")
    assert {"export-unet", "export-resnet34unet"} <= stages_run(out)
    assert stages_run(out) <= {
        "validate", "export-unet", "export-resnet34unet", "evaluate-unet", "evaluate-resnet34unet", "plot"
    }  # fmt: skip

    out = run(repo, str(DVC), "exp", "run", "-S", "plot.num_images=3")
    assert stages_run(out) == {"validate", "plot"}

    # plot follows only if a tiny model's masks change at the new threshold (DVC skips it otherwise).
    out = run(repo, str(DVC), "exp", "run", "-S", "evaluate.threshold=0.4")
    assert (
        {"validate", "evaluate-unet", "evaluate-resnet34unet"}
        <= stages_run(out)
        <= {"validate", "evaluate-unet", "evaluate-resnet34unet", "plot"}
    )

    out = run(repo, str(DVC), "exp", "run", "-S", "image_size=64")
    assert stages_run(out) == ALL_STAGES - {"download", "split"}
    assert json.loads((repo / "metrics" / "unet.json").read_text())["image_size"] == 64

    shown = run(repo, str(DVC), "exp", "show", "--csv")
    assert "metrics/unet.json:dice" in shown


def dvc_fails(repo: Path, *args: str) -> tuple[str, set[str]]:
    """Run a dvc command expected to fail; return its one error line and the stages it ran."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.run([str(DVC), *args], cwd=repo, env=env, capture_output=True, text=True)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in output, output
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    run(repo, "git", "checkout", "--", "params.yaml")  # exp run leaves its -S edits in the workspace
    return errors[0], stages_run(output)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("+learning_rate=1e-3", "unknown key learning_rate; did you mean lr?"),
        ("lr=-1", "lr: must be greater than 0, got -1"),
        ("image_size=100", "image_size must be a multiple of 32, got 100"),
        ("loss=focal", "loss: must be 'bce_dice', 'dice' or 'bce', got 'focal'"),
    ],
)
def test_a_bad_or_unknown_param_fails_first_in_one_line(repo, change, message):
    error, ran = dvc_fails(repo, "exp", "run", "-S", change)
    assert error == f"error: params.yaml: {message}"
    assert ran == {"validate"}  # before any other stage


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"learning_rate": 0.001}, "unknown key learning_rate; did you mean lr?"),
        ({"evaluate": {"treshold": 0.4}}, "unknown key evaluate.treshold; did you mean evaluate.threshold?"),
    ],
)
def test_a_key_misspelt_in_params_yaml_fails_dvc_repro(repo, edit, message):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    (repo / "params.yaml").write_text(yaml.safe_dump(merge(params, edit), sort_keys=False))
    error, ran = dvc_fails(repo, "repro")
    assert error == f"error: params.yaml: {message}" and ran == {"validate"}


def test_download_reruns_only_for_the_keys_its_source_uses(repo):
    # The source is synthetic: the url is not its input, so validate runs and download does not.
    # (Earlier tests leave experiments applied in the workspace, so other stages may follow.)
    ran = stages_run(run(repo, str(DVC), "exp", "run", "-S", "data.url=http://127.0.0.1:9/pets"))
    assert "validate" in ran and not ran & {"download", "split"}
    # Preprocess reads max_bad_fraction; download and split do not.
    ran = stages_run(run(repo, str(DVC), "exp", "run", "-S", "data.max_bad_fraction=0.2"))
    assert {"validate", "preprocess"} <= ran and not ran & {"download", "split"}
    run(repo, "git", "checkout", "--", "params.yaml")


def test_queued_experiments_run_side_by_side_and_show_their_dice(repo):
    run(repo, "git", "checkout", "--", ".")
    run(repo, str(DVC), "checkout", "--force")
    run(repo, str(DVC), "exp", "run", "--queue", "-S", "lr=0.002,0.0005")
    run(repo, str(DVC), "queue", "start", "-j", "2")  # two workers at once, each in its own copy
    deadline = time.monotonic() + 600
    while re.search(r"\b(Queued|Running)\b", status := run(repo, str(DVC), "queue", "status")):
        assert time.monotonic() < deadline, status
        time.sleep(2)
    assert len(re.findall(r"\bSuccess\b", status)) == 2, status
    shown = json.loads(run(repo, str(DVC), "exp", "show", "--json"))
    dice = {}
    for commit in shown:
        for exp in commit.get("experiments") or []:
            data = exp["revs"][0]["data"]
            lr = data["params"]["params.yaml"]["data"]["lr"]
            dice[lr] = [data["metrics"][f"metrics/{m}.json"]["data"]["dice"] for m in ("unet", "resnet34_unet")]
    assert {0.002, 0.0005} <= set(dice)
    assert all(0.0 <= d <= 1.0 for lr in (0.002, 0.0005) for d in dice[lr])
