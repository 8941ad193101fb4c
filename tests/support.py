"""Plain helpers that several test modules import: the repository's paths, params files, a trimap, tiny
model sizes and the `dvc` command line on a copy of the project. Fixtures live in conftest.py."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]

# A hand-made trimap with all three labels: 1 pet, 2 background, 3 the boundary band between them.
TRIMAP = np.array([[1, 1, 3, 2], [1, 3, 3, 2], [3, 2, 2, 2]], dtype=np.uint8)
TRIMAP.flags.writeable = False

# The smallest architectures the tests build: the registry's option names, per model.
TINY_ARCH = {"unet": {"base_channels": 4}, "resnet34_unet": {"decoder_channels": [16, 8, 8, 4, 4]}}


def shipped_params() -> dict:
    """The repository's params.yaml, as a fresh dict."""
    return yaml.safe_load((REPO / "params.yaml").read_text())


def merge(base: dict, override: dict) -> dict:
    """``override`` merged into ``base`` in place, section by section (nested dicts merge, values replace)."""
    for key, value in override.items():
        base[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return base


def write_params(path: Path, **changes) -> Path:
    """Write the repository's params.yaml to ``path`` with top-level keys replaced; a dict value is
    merged into its section (the schema needs a whole file, so tests start from the shipped one)."""
    path.write_text(yaml.safe_dump(merge(shipped_params(), changes)))
    return path


def data_params(
    folder: Path,
    image_size: int = 64,
    valid_fraction: float = 0.25,
    boundary: str = "pet",
    max_bad_fraction: float = 0.01,
) -> Path:
    """``folder``/params.yaml with the data keys the split and preprocess tests vary (split seed 0)."""
    return write_params(
        folder / "params.yaml",
        image_size=image_size,
        split={"valid_fraction": valid_fraction, "seed": 0},
        preprocess={"boundary": boundary},
        data={"max_bad_fraction": max_bad_fraction},
    )


def preprocess_reports(report: Path) -> list[str]:
    """The preprocess stage's two report arguments: ``report`` (what was skipped and why) and, beside it,
    skipped.json (the count a DVC metric holds)."""
    return ["--metrics", str(Path(report).with_name("skipped.json")), "--report", str(report)]


# --- the dvc command line -----------------------------------------------------------------------

BIN = Path(sys.executable).absolute().parent
DVC = BIN / "dvc"
ALL_STAGES = {
    "validate",
    "download",
    "split",
    "preprocess",
    "train@unet",
    "train@resnet34_unet",
    "export@unet",
    "export@resnet34_unet",
    "evaluate@unet",
    "evaluate@resnet34_unet",
    "plot",
}


def square(size: int) -> dict:
    """A checkpoint's or ONNX export's ``resize`` record of photos squashed to ``size`` x ``size`` pixels."""
    return {"mode": "square", "side": size}


SQUARE_32, SQUARE_64 = square(32), square(64)
REPRO_LOG = "repro.log"  # the finished pipeline's `dvc repro` output, beside its repository (conftest.py)
# The smallest pipeline that runs every stage: 16 synthetic images at 32 px, 1 epoch of tiny models, in
# bf16 (native on a CPU with AVX512-BF16, emulated elsewhere: either way the bf16 path runs end to end).
TINY = {
    "precision": "bf16",
    "data": {"source": "synthetic", "synthetic_images": 16},
    "image_size": 32,
    "epochs": 1,
    "batch_size": 4,
    "unet": {"base_channels": 4},
    "resnet34_unet": {"decoder_channels": [8, 8, 8, 4, 4]},
    "export": {"check_images": 2},
    "plot": {"num_images": 2, "worst": 3},
}


def dvc_env() -> dict[str, str]:
    """The environment of the `dvc` runs: this process's, with this interpreter's bin first on PATH, so
    that the stages' `python` is this one."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}


def run(repo: Path, *args: str) -> str:
    """Run a command in ``repo`` (``dvc`` means the one beside this interpreter); assert it succeeds and
    return its stdout and stderr."""
    if args[0] == "dvc":
        args = (str(DVC), *args[1:])
    proc = subprocess.run(args, cwd=repo, env=dvc_env(), capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def stages_run(output: str) -> set[str]:
    """The stages a `dvc repro` / `dvc exp run` output says it ran."""
    return set(re.findall(r"Running stage '([^']+)'", output))


def edit_params(repo: Path, changes: dict) -> None:
    """Merge ``changes`` into ``repo``'s params.yaml, keeping its key order."""
    params = merge(yaml.safe_load((repo / "params.yaml").read_text()), changes)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def copy_repo(src: Path, dst: Path) -> Path:
    """Copy the git + DVC repository ``src`` (work tree, .git, .dvc/cache) to ``dst``, which must not exist.
    DVC's state, index and queue databases in .dvc/tmp stay behind: they key files by inode and hold
    absolute paths, and DVC makes new ones."""
    shutil.copytree(src, dst, symlinks=True, ignore=lambda folder, _: ["tmp"] if Path(folder) == src / ".dvc" else [])
    return dst


def new_project(repo: Path, params: dict) -> Path:
    """A git + DVC repository at ``repo`` holding the project's code and pipeline, the shipped params with
    ``params`` merged in, and one commit (dvclive fails in a repository without one)."""
    for name in ("pipeline", "stages", "vendor"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", "params.yaml", ".gitignore", ".dvcignore"):
        shutil.copy(REPO / name, repo / name)
    edit_params(repo, params)
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "ci@petseg.invalid")  # this repository only
    run(repo, "git", "config", "user.name", "petseg CI")
    run(repo, "dvc", "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", repo / ".dvc" / "config")  # the project's cache.type
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "project")
    return repo


class FakeClock:
    """A clock whose seconds pass only when a test moves ``now``: call it (``time.monotonic``'s shape) or its
    ``perf_counter`` (to stand in for the ``time`` module)."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def perf_counter(self) -> float:
        return self.now
