"""Benchmark: DVC's own overhead on this pipeline, and the cost of many small files in the raw data.

Usage: python bench/dvc.py [--images 7390] [--repeats 3] [--skip-layout]

Prints, from one run on this machine (times vary with load; ratios are the point):
1. wall time of a no-op `dvc repro` and of `dvc status` on a finished pipeline (a copy of this
   repository, tiny synthetic params: the DVC overhead, not training). Target: < 5 s each.
2. the raw dataset as stored today (the extracted folder, ~2 files per image) against the two
   official tarballs as the tracked data, on a synthetic set of --images pairs (7,390 = the full
   dataset's count): `dvc add`, `dvc push` to a local remote, and a fresh clone's `dvc pull`
   (fetch + checkout), each with cache.type copy and hardlink; and the ratio folder / tarballs.
Medians of --repeats runs of each command; every measured command runs in its own process.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.data.synthetic import make_synthetic  # noqa: E402

BIN = Path(sys.executable).parent
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


def sh(cwd: Path, *args: str) -> float:
    """Run a command in ``cwd``; return its wall time in seconds. Raises CalledProcessError on failure."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def new_repo(path: Path) -> Path:
    path.mkdir(parents=True)
    sh(path, "git", "init", "-q")
    sh(path, "git", "config", "user.email", "bench@petseg.invalid")
    sh(path, "git", "config", "user.name", "petseg bench")
    sh(path, "dvc", "init", "-q")
    return path


def overhead(work: Path, repeats: int) -> dict[str, float]:
    """Median seconds of a no-op `dvc repro` and of `dvc status` on a finished tiny pipeline."""
    repo = new_repo(work / "pipeline")
    for name in ("pipeline", "stages"):
        shutil.copytree(REPO / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(REPO / name, repo / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    for key, value in TINY.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) else value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "commit", "-qm", "bench")
    first = sh(repo, "dvc", "repro")
    print(f"(first `dvc repro` of the tiny pipeline: {first:.0f} s)")
    return {
        "no-op dvc repro": statistics.median(sh(repo, "dvc", "repro") for _ in range(repeats)),
        "dvc status": statistics.median(sh(repo, "dvc", "status") for _ in range(repeats)),
    }


def tarballs(raw: Path, dest: Path) -> None:
    """The two official archives' layout: images.tar.gz (images/) and annotations.tar.gz (annotations/)."""
    dest.mkdir()
    for sub in ("images", "annotations"):
        with tarfile.open(dest / f"{sub}.tar.gz", "w:gz") as tar:
            tar.add(raw / sub, arcname=sub)


def layout_times(work: Path, data: Path, name: str, link: str, repeats: int) -> dict[str, float]:
    """Median seconds of dvc add, push and a fresh clone's pull of ``data`` tracked as ``name``."""
    times: dict[str, list[float]] = {"dvc add": [], "dvc push": [], "dvc pull (fresh clone)": []}
    for i in range(repeats):
        root = work / f"{name}-{link}-{i}"
        repo = new_repo(root / "repo")
        sh(repo, "dvc", "config", "cache.type", link)
        sh(repo, "dvc", "remote", "add", "-d", "store", str(root / "remote"))
        shutil.copytree(data, repo / name) if data.is_dir() else shutil.copy(data, repo / name)
        times["dvc add"].append(sh(repo, "dvc", "add", name))
        sh(repo, "git", "add", "-A")
        sh(repo, "git", "commit", "-qm", "data")
        times["dvc push"].append(sh(repo, "dvc", "push"))
        sh(root, "git", "clone", "-q", str(repo), str(root / "clone"))
        times["dvc pull (fresh clone)"].append(sh(root / "clone", "dvc", "pull"))
        shutil.rmtree(root)
    return {key: statistics.median(values) for key, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=7390, help="synthetic pairs for the layout comparison")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-layout", action="store_true", help="only the no-op repro / status timing")
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; dvc from {BIN}")
    with tempfile.TemporaryDirectory(prefix="petseg-bench-dvc-") as tmp:
        work = Path(tmp)
        print("\n| command (finished tiny pipeline) | seconds | target |\n| --- | --- | --- |")
        for command, seconds in overhead(work, args.repeats).items():
            print(f"| {command} | {seconds:.2f} | < 5 |")
        if args.skip_layout:
            return
        raw = work / "raw"
        start = time.perf_counter()
        make_synthetic(raw, args.images, seed=0)
        files = sum(1 for p in raw.rglob("*") if p.is_file())
        size = sum(p.stat().st_size for p in raw.rglob("*") if p.is_file()) / 2**20
        print(f"\nsynthetic raw data: {args.images} pairs, {files} files, {size:.0f} MiB "
              f"(made in {time.perf_counter() - start:.0f} s)")  # fmt: skip
        tarballs(raw, work / "tarballs")
        print("\n| cache.type | step | folder (s) | 2 tarballs (s) | folder / tarballs |")
        print("| --- | --- | --- | --- | --- |")
        for link in ("copy", "hardlink"):
            folder = layout_times(work, raw, "raw", link, args.repeats)
            packed = layout_times(work, work / "tarballs", "tarballs", link, args.repeats)
            for step in folder:
                ratio = folder[step] / packed[step]
                print(f"| {link} | {step} | {folder[step]:.1f} | {packed[step]:.1f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
