"""SIGKILL in the middle of preprocess, then `dvc repro`: a clean run and the same cache as without the kill."""

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import DVC, dvc_env, edit_params, run, stages_run

pytestmark = pytest.mark.e2e


def digests(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def _kill_preprocess_then_rerun(repo: Path) -> dict:
    """On the finished pipeline, more and larger images; `dvc repro preprocess` killed once the train and
    valid splits are written, then run again, then forced once more, uninterrupted."""
    # Enough images, decoded by one process, that the test split takes a while (a second or more, also on
    # a quiet machine) after the train and valid splits are written.
    edit_params(repo, {"data": {"synthetic_images": 600}, "image_size": 128, "preprocess": {"workers": 1}})
    seen = {"upstream": stages_run(run(repo, "dvc", "repro", "split"))}
    proc = subprocess.Popen(
        [str(DVC), "repro", "preprocess"], cwd=repo, env=dvc_env(), start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while not list((repo / "data").glob(".cache.tmp-*/valid")):
            assert proc.poll() is None, "preprocess finished before it could be killed"
            assert time.monotonic() < deadline, "preprocess did not finish the valid split within 2 minutes"
            time.sleep(0.01)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage it runs
        proc.wait()
    seen["cache_after_kill"] = (repo / "data" / "cache").exists()
    seen["rerun"] = stages_run(run(repo, "dvc", "repro", "preprocess"))
    seen["leftovers"] = [p.name for p in (repo / "data").iterdir() if p.name.startswith(".")]
    seen["after_kill"] = digests(repo / "data" / "cache")
    run(repo, "dvc", "repro", "-f", "preprocess")  # uninterrupted
    seen["uninterrupted"] = digests(repo / "data" / "cache")
    seen["status"] = run(repo, "dvc", "status", "preprocess")
    return seen


DVC_JOBS = {"kill": _kill_preprocess_then_rerun}


def test_preprocess_killed_midway_reruns_clean_to_the_same_cache(dvc_jobs):
    seen = dvc_jobs["kill"]
    assert seen["upstream"] == {"validate", "download", "split"}
    # DVC removed the finished pipeline's cache before it started the stage, and the kill came before
    # the new one was complete.
    assert not seen["cache_after_kill"]
    assert seen["rerun"] == {"preprocess"}
    assert seen["leftovers"] == []
    assert {name.split("/")[0] for name in seen["after_kill"]} == {"train", "valid", "test"}
    assert seen["uninterrupted"] == seen["after_kill"]
    assert "up to date" in seen["status"]
