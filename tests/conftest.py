"""Shared fixtures: the repository root, the real mini dataset, a small synthetic dataset."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("DVC_NO_ANALYTICS", "1")

REPO = Path(__file__).resolve().parents[1]
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


def write_params(path: Path, **changes) -> Path:
    """Write the repository's params.yaml to ``path`` with top-level keys replaced; a dict value is
    merged into its section (the schema needs a whole file, so tests start from the shipped one)."""
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(params.get(key), dict):
            params[key].update(value)
        else:
            params[key] = value
    path.write_text(yaml.safe_dump(params))
    return path


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


@pytest.fixture(scope="module")
def tiny_data(synthetic_root):
    """(train, valid) as (images uint8 (N, 32, 32, 3), masks uint8 (N, 32, 32)) of the synthetic set, split 0.25."""
    from pipeline.data.build import build_cache
    from pipeline.data.split import make_split

    split = make_split(synthetic_root, 0.25, seed=0)
    train = build_cache(synthetic_root, split.train, 32, "pet", progress=False)
    valid = build_cache(synthetic_root, split.valid, 32, "pet", progress=False)
    return (train.images, train.masks), (valid.images, valid.masks)
