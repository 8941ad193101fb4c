"""End to end through the real `dvc` CLI, each test and job on its own copy of one finished tiny pipeline
(conftest's finished_pipeline: synthetic data, every stage run once and committed). The experiments and
the queue are DVC_JOBS, which conftest's dvc_jobs runs once each, when a test first reads it; the tests
check what they returned. Review and bad params: test_review_dvc.py."""

import hashlib
import json
import re
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from pipeline.core.constants import HEADLINE_METRICS
from pipeline.evaluate.record import eval_record_path
from pipeline.report.files import FIGURES
from tests.support import ALL_STAGES, REPRO_LOG, run, shipped_params, stages_run

pytestmark = pytest.mark.e2e

PER_IMAGE_CHART = "Test Dice per image vs pet fraction (native resolution)"
BASELINE_LR = shipped_params()["lr"]  # the finished pipeline's (TINY leaves lr alone)
EVALUATION = {"validate", "evaluate@unet", "evaluate@resnet34_unet"}
EXPORTS = {"export@unet", "export@resnet34_unet"}
AFTER_TRAINING = ALL_STAGES - {"download", "split", "preprocess"}
LR = "lr=0.0003"

# One experiment per params change, each from the finished pipeline, and the stages it may rerun:
# (at least, at most). validate follows every params change (it checks the whole file); then only
# what the key decides, and what depends on an output that changes.
RERUNS = {
    LR: (AFTER_TRAINING, AFTER_TRAINING),  # a training key both models share
    "unet.base_channels=6": ({"validate", "train@unet", "export@unet", "evaluate@unet", "plot"},) * 2,
    "evaluate.tta=hflip": (EVALUATION | {"plot"},) * 2,
    # Export and what depends on it (evaluate reads the parity it records, plot reads evaluate).
    "export.check_images=3": (EXPORTS, {"validate", *EXPORTS, *EVALUATION, "plot"}),
    "plot.num_images=3": ({"validate", "plot"},) * 2,
    # plot follows only if a tiny model's masks change at the new threshold (DVC skips it otherwise).
    "evaluate.threshold=0.4": (EVALUATION, EVALUATION | {"plot"}),
    # The trimap's three classes: a new cache, then everything after it; the data is the same. (image_size,
    # the other key of the cache, decides the same stages: its experiment would repeat this one.)
    "task=trimap": (ALL_STAGES - {"download", "split"},) * 2,
}
DOWNLOAD_RERUNS = {
    # The source is synthetic: the url is not its input, so validate runs and download does not.
    "data.url=http://127.0.0.1:9/pets": ({"validate"}, {"validate"}),
    # Preprocess reads max_bad_fraction; download and split do not.
    "data.max_bad_fraction=0.2": ({"validate", "preprocess"}, ALL_STAGES - {"download", "split"}),
}
# Run as queued experiments, two side by side: changes after training, so the queued copies retrain nothing.
QUEUED = ("evaluate.tta=hflip", "evaluate.threshold=0.4", "export.check_images=3")


# --- the dvc work (conftest's dvc_jobs runs each on its own copy) ---------------------------------------


def _experiment(change: str):
    """`dvc exp run -S change` in the workspace: its output and the UNet's metrics after it."""

    def job(repo: Path) -> tuple[str, dict]:
        out = run(repo, "dvc", "exp", "run", "-S", change)
        return out, json.loads((repo / "metrics" / "evaluation" / "unet" / "scores.json").read_text())

    return job


def _lr_and_back(repo: Path) -> dict:
    """An lr experiment, `dvc metrics diff` against the baseline, then the baseline lr again."""
    changed = run(repo, "dvc", "exp", "run", "-S", LR)
    diff = json.loads(run(repo, "dvc", "metrics", "diff", "--all", "--json"))
    back = run(repo, "dvc", "exp", "run", "-S", f"lr={BASELINE_LR}")
    return {"changed": changed, "diff": diff, "back": back}


def _queue(repo: Path) -> dict:
    """QUEUED as queued experiments, run by two workers at once, each in its own copy."""
    names = {}
    for change in QUEUED:
        queued = run(repo, "dvc", "exp", "run", "--queue", "-S", change)
        names[change] = re.search(r"Queued experiment '([^']+)'", queued).group(1)
    run(repo, "dvc", "queue", "start", "-j", "2")
    deadline = time.monotonic() + 600
    while re.search(r"\b(Queued|Running)\b", status := run(repo, "dvc", "queue", "status")):
        assert time.monotonic() < deadline, status
        time.sleep(1)
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json"))
    return {
        "names": names,
        "status": status,
        "logs": {change: run(repo, "dvc", "queue", "logs", name) for change, name in names.items()},
        "experiments": {
            exp["revs"][0]["name"]: exp["revs"][0]["data"]
            for commit in shown
            for exp in commit.get("experiments") or []
        },
        "csv": run(repo, "dvc", "exp", "show", "--csv"),
    }


DVC_JOBS = {
    "task=trimap": _experiment("task=trimap"),
    "lr": _lr_and_back,
    "queue": _queue,
    "unet.base_channels=6": _experiment("unet.base_channels=6"),
    **{change: _experiment(change) for change in ("data.max_bad_fraction=0.2", "plot.num_images=3")},
    "data.url=http://127.0.0.1:9/pets": _experiment("data.url=http://127.0.0.1:9/pets"),
}


# --- the finished pipeline -------------------------------------------------------------------------------


def test_repro_writes_metrics_models_and_plots_for_both_models(dvc_repo, finished_pipeline):
    repo = dvc_repo
    said = (finished_pipeline.parent / REPRO_LOG).read_text()
    for model in ("unet", "resnet34_unet"):  # TINY asks for bf16: the autocast path trained both
        assert re.search(rf"train {model}: .*; precision: bf16 \(asked; (native|emulated)", said), said[-3000:]
        # The tiny trainings in subprocesses, beyond tests/conftest.py's guard: `compile: auto` is off on a CPU.
        assert re.search(rf"train {model}: .*; compile: off \(auto: on a cpu", said), said[-3000:]
    for model in ("unet", "resnet34_unet"):
        metrics = json.loads((repo / "metrics" / "evaluation" / model / "scores.json").read_text())
        assert metrics["images"] == 8  # synthetic: every other image is in test.txt
        for key in ("dice", "dice_per_image", "iou", "pixel_accuracy", "best_valid_dice"):
            assert 0.0 <= metrics[key] <= 1.0
        assert metrics["onnx_max_abs_diff"] <= 1e-3
        # The record petseg predict looks for beside the weights (the path is in dvc.yaml).
        record = json.loads(eval_record_path(repo / "models" / f"{model}.pt").read_text())
        assert record["model"] == model and record["threshold"] == metrics["threshold"]
        for name in (f"models/{model}.pt", f"models/{model}.onnx", f"metrics/evaluation/{model}/per_image.csv"):
            assert (repo / name).stat().st_size > 0
        # The pets have breeds: a per-breed table beside the scores, in the model's folder (git-tracked).
        assert sorted(p.name for p in (repo / "metrics" / "evaluation" / model).iterdir()) == [
            "per_breed.csv", "per_image.csv", "scores.json"
        ]  # fmt: skip
        assert (repo / "live" / model / "plots" / "metrics" / "valid" / "dice.tsv").exists()
    assert sorted(p.name for p in (repo / "plots").iterdir()) == sorted(FIGURES.values())  # per_breed.png too
    for name in FIGURES.values():
        assert (repo / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    shown = json.loads(run(repo, "dvc", "metrics", "show", "--json"))
    files = next(iter(shown.values()))["data"]
    assert set(files) == {"metrics/test.json", "metrics/skipped.json"}  # what a reviewer compares, only
    test = files["metrics/test.json"]["data"]
    assert list(test) == list(HEADLINE_METRICS) and set(test["dice"]) == {"unet", "resnet34_unet"}
    assert files["metrics/skipped.json"]["data"] == {"skipped": 0}
    plots = json.loads(run(repo, "dvc", "plots", "show", "--json"))
    # One chart per quantity, both models in it, and the figures: nothing drawn twice.
    charts = {"Train loss", "Valid loss", "Valid Dice", "Learning rate", PER_IMAGE_CHART}
    assert set(plots["data"]) == charts | {f"plots/{name}" for name in FIGURES.values()}
    per_image = plots["data"][PER_IMAGE_CHART][0]["content"]
    assert "pet_fraction" in json.dumps(per_image)  # the CSV is drawn, with its columns
    # The models are declared artifacts: once a version is registered with a GTO-style git tag,
    # `dvc artifacts get` fetches the file by name, as it was at that commit.
    run(repo, "git", "tag", "-a", "unet-onnx@v0.0.1", "-m", "Registering artifact unet-onnx version 0.0.1")
    got = repo.parent / "got.onnx"
    run(repo, "dvc", "artifacts", "get", str(repo), "unet-onnx", "-o", str(got))
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert hashlib.md5(got.read_bytes()).hexdigest() == lock["stages"]["export@unet"]["outs"][0]["md5"]
    # Nothing left to do: the lock file matches the workspace.
    assert stages_run(run(repo, "dvc", "repro")) == set()


def test_push_then_pull_into_a_second_clone_leaves_nothing_to_run(dvc_repo, tmp_path):
    repo = dvc_repo
    # A local folder stands in for S3 and the like: the same `dvc push` / `dvc pull`.
    run(repo, "dvc", "remote", "add", "-d", "store", str(tmp_path / "remote"))
    run(repo, "git", "commit", "-qam", "a DVC remote")
    assert "files pushed" in run(repo, "dvc", "push")
    clone = tmp_path / "clone"
    run(tmp_path, "git", "clone", "-q", str(repo), str(clone))
    run(clone, "dvc", "pull")
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
    assert stages_run(run(clone, "dvc", "repro")) == set()


def _reflinks(folder: Path) -> bool:
    """Whether ``folder``'s file system makes copy-on-write clones (then DVC uses those, not links)."""
    (folder / "reflink-probe").write_bytes(b"x")
    probe = subprocess.run(["cp", "--reflink=always", folder / "reflink-probe", folder / "reflink-clone"])
    return probe.returncode == 0


# --- experiments ---------------------------------------------------------------------------------------


def _rerun(dvc_jobs, change: str) -> tuple[set[str], str]:
    """The stages the experiment of ``change`` ran, and the output that says so."""
    if change in QUEUED:
        output = dvc_jobs["queue"]["logs"][change]
    elif change == LR:
        output = dvc_jobs["lr"]["changed"]
    else:
        output = dvc_jobs[change][0]
    return stages_run(output), output


def test_queued_experiments_run_side_by_side_and_show_their_dice(dvc_jobs):
    queue = dvc_jobs["queue"]
    assert len(re.findall(r"\bSuccess\b", queue["status"])) == len(QUEUED), queue["status"]
    for change, name in queue["names"].items():
        data = queue["experiments"][name]
        key, value = change.split("=")
        params = data["params"]["params.yaml"]["data"]
        for part in key.split("."):
            params = params[part]
        assert params == yaml.safe_load(value), change  # each ran with its own change
        for model in ("unet", "resnet34_unet"):
            assert 0.0 <= data["metrics"]["metrics/test.json"]["data"]["dice"][model] <= 1.0
    assert "dice.unet,dice.resnet34_unet" in queue["csv"]


@pytest.mark.parametrize("change", RERUNS)
def test_experiments_rerun_exactly_the_affected_stages(dvc_jobs, change):
    at_least, at_most = RERUNS[change]
    ran, output = _rerun(dvc_jobs, change)
    assert at_least <= ran <= at_most, output


def test_the_trimap_task_trains_three_classes_and_reports_them(dvc_jobs):
    output, metrics = dvc_jobs["task=trimap"]
    assert list(metrics["per_class"]) == ["background", "pet", "boundary"]
    assert re.search(r"train unet: best valid mIoU [0-9.]+ at epoch 1", output), output[-3000:]


def test_an_experiment_records_its_params_in_the_metrics(dvc_jobs):
    log = dvc_jobs["queue"]["logs"]["evaluate.tta=hflip"]
    assert re.search(r"evaluate unet: .*, tta hflip", log) and re.search(r"evaluate resnet34_unet: .*, tta hflip", log)


def test_metrics_diff_shows_the_dice_of_an_lr_experiment_and_the_run_cache_restores_the_baseline(dvc_jobs):
    lr = dvc_jobs["lr"]
    assert {"metrics/test.json"} <= set(lr["diff"])
    assert {"dice.unet", "dice.resnet34_unet"} <= set(lr["diff"]["metrics/test.json"])
    # Back to the baseline lr: the run-cache restores the finished trainings instead of rerunning
    # them (the resume state is kept out of DVC's outputs so that this still works).
    assert not stages_run(lr["back"]) & {"train@unet", "train@resnet34_unet"}
    assert "Stage 'train@unet' is cached - skipping run" in lr["back"]


@pytest.mark.parametrize("change", DOWNLOAD_RERUNS)
def test_download_reruns_only_for_the_keys_its_source_uses(dvc_jobs, change):
    at_least, at_most = DOWNLOAD_RERUNS[change]
    ran, output = _rerun(dvc_jobs, change)
    assert at_least <= ran <= at_most, output
