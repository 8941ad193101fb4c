"""SIGKILL in the middle of preprocess, then `dvc repro`: a clean run and the same cache as without the kill."""

import hashlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import yaml

from tests.conftest import REPO
from tests.test_pipeline_dvc import BIN, DVC, merge, run, stages_run


def digests(folder: Path) -> dict[str, str]:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_preprocess_killed_midway_reruns_clean_to_the_same_cache(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO / name, repo / name)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    # Enough images that the test split takes a while after the train and valid splits are written.
    merge(params, {"data": {"source": "synthetic", "synthetic_images": 300}, "image_size": 128})
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(repo, "git", "init", "-q")
    run(repo, str(DVC), "init", "-q")
    run(repo, str(DVC), "repro", "split")

    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    proc = subprocess.Popen(
        [str(DVC), "repro", "preprocess"], cwd=repo, env=env, start_new_session=True,
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
    assert not (repo / "data" / "cache").exists()  # the kill came before the cache was complete

    assert stages_run(run(repo, str(DVC), "repro", "preprocess")) == {"preprocess"}
    leftovers = [p.name for p in (repo / "data").iterdir() if p.name.startswith(".")]
    assert leftovers == []
    after_kill = digests(repo / "data" / "cache")
    assert {name.split("/")[0] for name in after_kill} == {"train", "valid", "test"}
    run(repo, str(DVC), "repro", "-f", "preprocess")  # uninterrupted
    assert digests(repo / "data" / "cache") == after_kill
    assert "up to date" in run(repo, str(DVC), "status", "preprocess")
