"""Shared fixtures: the real mini dataset, a small synthetic dataset and its caches, a tiny trained UNet
with its evaluate outputs, and one finished tiny DVC pipeline that end-to-end tests copy (with the dvc
work of their DVC_JOBS started in the background)."""

import contextlib
import itertools
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    ALL_STAGES,
    BIN,
    DVC,
    REPO,
    REPRO_LOG,
    TINY,
    copy_repo,
    new_project,
    run,
    stages_run,
    write_params,
)

# ../shared beside the repository (CI puts it there); PETSEG_PETS_MINI overrides.
PETS_MINI = Path(os.environ.get("PETSEG_PETS_MINI", REPO.parent / "shared" / "data" / "oxford-iiit-pet-mini"))


@pytest.fixture(scope="session")
def pets_mini() -> Path:
    """The real 619-pair Oxford-IIIT Pet subset; skips the test when it is absent."""
    if not (PETS_MINI / "annotations" / "trimaps").is_dir():
        pytest.skip(f"real pets not found at {PETS_MINI} (set PETSEG_PETS_MINI or put ../shared beside the repo)")
    return PETS_MINI


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A 16-image synthetic dataset in the official layout (seed 0), shared read-only by tests."""
    from pipeline.data.synthetic import make_synthetic

    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic(root, 16, seed=0)
    return root


@pytest.fixture
def no_proxy(monkeypatch):
    """urllib honours *_proxy variables; requests to 127.0.0.1 must not leave the machine."""
    for name in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "*")


@pytest.fixture
def slept(monkeypatch) -> list[float]:
    """The backoff waits (seconds) asked of pipeline.data.download.download's default ``sleep``, which no
    longer waits."""
    from pipeline.data.download import download

    delays: list[float] = []
    monkeypatch.setitem(download.__kwdefaults__, "sleep", delays.append)
    return delays


@pytest.fixture(scope="session")
def tiny_data(synthetic_root):
    """(train, valid) as (images uint8 (N, 32, 32, 3), masks uint8 (N, 32, 32)) of the synthetic set, split
    0.25: 6 train and 2 valid images. Shared read-only."""
    from pipeline.data.build import build_cache
    from pipeline.data.split import make_split

    split = make_split(synthetic_root, 0.25, seed=0)
    train = build_cache(synthetic_root, split.train, 32, "pet", progress=False)
    valid = build_cache(synthetic_root, split.valid, 32, "pet", progress=False)
    for array in (train.images, train.masks, valid.images, valid.masks):
        array.flags.writeable = False
    return (train.images, train.masks), (valid.images, valid.masks)


# --- a tiny UNet through the train, export and evaluate stages, in process ------------------------


def _train_outputs(root: Path) -> list[str]:
    return ["--checkpoint", str(root / "unet.pt"), "--live", str(root / "live"), "--resume", str(root / "r.pt")]


@pytest.fixture(scope="session")
def trained(synthetic_root, tmp_path_factory) -> Path:
    """A folder with caches at 32 px (train.npz, valid.npz, test.npz), a 1-epoch UNet (unet.pt, live/),
    its ONNX export (unet.onnx), the evaluate stage's outputs (unet.json, unet_per_image.csv,
    unet_per_breed.csv, pred.npz, unet.eval.json) and the params.yaml they were made with. Read-only."""
    import stages.evaluate
    import stages.export
    import stages.train
    from pipeline.core.runner import run_stage
    from pipeline.data.build import build_cache
    from pipeline.data.cache import save_cache
    from pipeline.data.split import make_split

    root = tmp_path_factory.mktemp("trained")
    write_params(
        root / "params.yaml", image_size=32, epochs=1, batch_size=4, unet={"base_channels": 4}, plot={"num_images": 2}
    )
    split = make_split(synthetic_root, 0.25, seed=0)
    for name in ("train", "valid", "test"):
        save_cache(root / f"{name}.npz", build_cache(synthetic_root, getattr(split, name), 32, "pet", progress=False))
    p = ["--params", str(root / "params.yaml")]
    train = ["--model", "unet", "--train", str(root / "train.npz"), "--valid", str(root / "valid.npz")]
    assert run_stage(stages.train.main, [*p, *train, *_train_outputs(root)]) == 0
    export = ["--checkpoint", str(root / "unet.pt"), "--test", str(root / "test.npz"), "--out", str(root / "unet.onnx")]
    assert run_stage(stages.export.main, [*p, *export]) == 0
    assert run_stage(stages.evaluate.main, _evaluate_args(root, root)) == 0
    return root


def _evaluate_args(trained: Path, out: Path, checkpoint=None, test=None, params=None) -> list[str]:
    return [
        "--params", str(params or trained / "params.yaml"), "--checkpoint", str(checkpoint or trained / "unet.pt"),
        "--onnx", str(trained / "unet.onnx"), "--valid", str(trained / "valid.npz"),
        "--test", str(test or trained / "test.npz"), "--metrics", str(out / "unet.json"),
        "--per-image", str(out / "unet_per_image.csv"), "--per-breed", str(out / "unet_per_breed.csv"),
        "--predictions", str(out / "pred.npz"), "--record", str(out / "unet.eval.json"),
    ]  # fmt: skip


@pytest.fixture
def evaluate_args(trained):
    """``evaluate_args(out, checkpoint=None, test=None, params=None)``: the evaluate stage's arguments on
    the ``trained`` fixture, writing into ``out``, with its checkpoint, test cache or params replaced."""
    return lambda out, **replaced: _evaluate_args(trained, out, **replaced)


@pytest.fixture
def train_outputs():
    """``train_outputs(folder)``: the train stage's output arguments (checkpoint, live, resume) in ``folder``."""
    return _train_outputs


# --- one finished tiny DVC pipeline, and dvc work on copies of it in the background ----------------
#
# The end-to-end tests mostly wait for dvc and the stages it starts, which keep one core busy. So that
# this work uses the other core while the unit tests run, the first test of a session whose selection
# needs the pipeline starts, in threads, building it and then the jobs the selected tests name with
# @pytest.mark.dvc_jobs(name, ...): entries of their module's DVC_JOBS, name → job(repo), each run on
# its own copy of the pipeline. Tests that need the pipeline run last (pytest_collection_modifyitems),
# and read a job's result through the dvc_jobs fixture, which waits for it and raises what it raised.
# Each job and each test has its own copy, so none depends on another or on their order.


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: "finished_pipeline" in item.fixturenames)  # stable: the order otherwise kept


def _job_names(item) -> list[str]:
    return [f"{item.module.__name__}::{name}" for mark in item.iter_markers("dvc_jobs") for name in mark.args]


class _Background:
    """The finished pipeline, built in a thread, and the jobs, run two at a time once it is built."""

    def __init__(self, root: Path, jobs: dict[str, Callable[[Path], Any]]):
        self.root = root
        self._builder = ThreadPoolExecutor(1, thread_name_prefix="dvc-pipeline")
        self._pipeline = self._builder.submit(_build_pipeline, root / "pipeline" / "repo")
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="dvc-job")
        self._jobs = {name: self._pool.submit(self._run, i, job) for i, (name, job) in enumerate(jobs.items())}

    def pipeline(self) -> Path:
        return self._pipeline.result()

    def result(self, name: str) -> Any:
        return self._jobs[name].result()

    def _run(self, i: int, job: Callable[[Path], Any]) -> Any:
        return job(copy_repo(self.pipeline(), self.root / f"job{i}" / "repo"))

    def close(self) -> None:
        """Stop what is left (the session ended early): queued jobs, and the processes running jobs started."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        if not all(f.done() for f in [self._pipeline, *self._jobs.values()]):
            import psutil

            for child in psutil.Process().children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if Path(child.cwd()).is_relative_to(self.root):
                        child.kill()
        self._builder.shutdown()
        self._pool.shutdown()


def _build_pipeline(repo: Path) -> Path:
    if not DVC.exists():
        raise RuntimeError(f"dvc not installed beside {BIN / 'python'}; run the README set-up")
    new_project(repo, TINY)
    output = run(repo, "dvc", "repro")
    assert stages_run(output) == ALL_STAGES
    (repo.parent / REPRO_LOG).write_text(output)  # beside the repository, for the tests to read
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline")
    return repo


@pytest.fixture(scope="session", autouse=True)
def _background(request, tmp_path_factory):
    needing = [item for item in request.session.items if "finished_pipeline" in item.fixturenames]
    if not needing:
        yield None
        return
    wanted = {name for item in needing for name in _job_names(item)}
    defined = [
        [(f"{module.__name__}::{name}", job) for name, job in getattr(module, "DVC_JOBS", {}).items()]
        for module in sorted({item.module for item in needing}, key=lambda m: m.__name__)
    ]
    # Each module's first (longest) job first, then each module's second, and so on.
    jobs = dict(
        entry for entries in itertools.zip_longest(*defined) for entry in entries if entry and entry[0] in wanted
    )
    if unknown := wanted - set(jobs):
        raise KeyError(f"@pytest.mark.dvc_jobs names jobs missing from DVC_JOBS: {sorted(unknown)}")
    background = _Background(tmp_path_factory.mktemp("dvc"), jobs)
    yield background
    background.close()


@pytest.fixture(scope="session")
def finished_pipeline(_background) -> Path:
    """A git + DVC repository of the project with the TINY params after one `dvc repro` of every stage,
    committed. Never changed: a test takes its own copy (dvc_repo), a job gets one."""
    return _background.pipeline()


@pytest.fixture
def dvc_repo(finished_pipeline, tmp_path) -> Path:
    """This test's own copy of the finished pipeline (work tree, .git and .dvc/cache)."""
    return copy_repo(finished_pipeline, tmp_path / "repo")


@pytest.fixture
def dvc_jobs(request, finished_pipeline, _background):
    """``dvc_jobs[name]``: what ``DVC_JOBS[name](repo)`` of this test's module returned, run in the
    background on its own copy of the finished pipeline; waits for it, and raises what it raised. The
    test names the jobs it reads with @pytest.mark.dvc_jobs(name, ...)."""
    declared = _job_names(request.node)

    def result(name: str) -> Any:
        key = f"{request.module.__name__}::{name}"
        if key not in declared:
            raise KeyError(f"{name!r}: add it to the test's @pytest.mark.dvc_jobs")
        return _background.result(key)

    return _JobResults(result)


class _JobResults:
    def __init__(self, result: Callable[[str], Any]):
        self._result = result

    def __getitem__(self, name: str) -> Any:
        return self._result(name)
