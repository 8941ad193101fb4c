"""Shared fixtures: the real mini dataset, a small synthetic dataset and its caches, a tiny trained UNet
with its evaluate outputs, and one finished tiny DVC pipeline that end-to-end tests and their modules'
DVC_JOBS copy."""

import os
from collections.abc import Callable
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


@pytest.fixture(scope="session", autouse=True)
def refuse_torch_compile():
    """``torch.compile`` replaced, for the whole session (session fixtures' trainings included), by a function
    that fails the test: the suite trains many tiny models, and one that started compiling would spend
    seconds to minutes on it (``compile: auto`` is off on a CPU: pipeline.core.device.choose_compile).
    Yields the real one, which a test marked ``compiles`` gets back (:func:`allow_marked_compile`)."""
    import torch

    real = torch.compile

    def refuse(*args, **kwargs):
        raise AssertionError("torch.compile in a test not marked `compiles`: tiny trainings must not compile")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch, "compile", refuse)
        yield real


@pytest.fixture(autouse=True)
def allow_marked_compile(request, refuse_torch_compile, monkeypatch):
    """The real ``torch.compile`` back for a test marked ``compiles``."""
    if request.node.get_closest_marker("compiles"):
        monkeypatch.setattr("torch.compile", refuse_torch_compile)


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


# --- one finished tiny DVC pipeline, and dvc work on copies of it ---------------------------------
#
# Built once per pytest-xdist worker that runs a test needing it (`make test` sends each test module whole
# to one worker), and copied by each test and each job, so that none depends on another or on their order.


@pytest.fixture(scope="session")
def finished_pipeline(tmp_path_factory) -> Path:
    """A git + DVC repository of the project with the TINY params after one `dvc repro` of every stage,
    committed, with that run's output in REPRO_LOG beside it. Never changed: a test takes its own copy
    (dvc_repo), a job gets one (dvc_jobs)."""
    if not DVC.exists():
        raise RuntimeError(f"dvc not installed beside {BIN / 'python'}; run the README set-up")
    repo = new_project(tmp_path_factory.mktemp("pipeline") / "repo", TINY)
    output = run(repo, "dvc", "repro")
    assert stages_run(output) == ALL_STAGES
    (repo.parent / REPRO_LOG).write_text(output)
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline")
    return repo


@pytest.fixture
def dvc_repo(finished_pipeline, tmp_path) -> Path:
    """This test's own copy of the finished pipeline (work tree, .git and .dvc/cache)."""
    return copy_repo(finished_pipeline, tmp_path / "repo")


@pytest.fixture(scope="module")
def dvc_jobs(request, finished_pipeline, tmp_path_factory):
    """``dvc_jobs[name]``: what ``DVC_JOBS[name](repo)`` of this test's module returned, run on its own
    copy of the finished pipeline when a test of the module first reads it. Several tests read the same
    job (an experiment's output, and the stages it ran), so it runs once: later reads get its result, or
    raise what it raised."""
    return _Jobs(request.module.DVC_JOBS, lambda: copy_repo(finished_pipeline, tmp_path_factory.mktemp("job") / "repo"))


class _Jobs:
    def __init__(self, jobs: dict[str, Callable[[Path], Any]], new_copy: Callable[[], Path]):
        self._jobs = jobs
        self._new_copy = new_copy
        self._done: dict[str, tuple[Any, Exception | None]] = {}

    def __getitem__(self, name: str) -> Any:
        if name not in self._done:
            try:
                self._done[name] = (self._jobs[name](self._new_copy()), None)
            except Exception as error:
                self._done[name] = (None, error)
        result, error = self._done[name]
        if error is not None:
            raise error
        return result
