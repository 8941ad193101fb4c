"""Benchmark of the preprocess stage: decode speed with 1 and all cores, and peak memory on a large set.

Usage: python bench/preprocess.py [--pets ../shared/data/oxford-iiit-pet-mini] [--size 256]
       [--images 1000 5000] [--rounds 3]

Prints Markdown tables, from one run on this machine (numbers vary with load; the ratios are the point):
- speed: images/s of :func:`pipeline.data.build.write_cache` over every pair of the real mini set with
  workers=1 and workers=all (``os.cpu_count()``), and of a control (all cores as independent
  processes, each writing a share of the pairs: the speed-up the machine allows at that moment, which
  a loaded machine caps), interleaved over ``--rounds`` rounds (median), their ratios, and the CPU
  milliseconds a pair costs (parent and pool together: what the pool adds);
- memory: the real stage (``python -m stages.preprocess``, a subprocess, workers auto) on synthetic
  sets of ``--images`` pairs at ``--size`` px: the peak RSS of its largest process (``os.wait4``'s
  ru_maxrss, which covers the pool's workers) and of the whole process tree (RSS and PSS summed,
  sampled every 50 ms with psutil; PSS shares each shared page out among the processes mapping it),
  against the same splits built in RAM and saved (what the stage did before the streamed cache).
"""

import argparse
import multiprocessing
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import machine, table  # noqa: E402
from pipeline.data.build import write_cache  # noqa: E402
from pipeline.data.layout import LIST_FILES, read_stems  # noqa: E402
from pipeline.data.synthetic import make_synthetic  # noqa: E402

MB = 1 << 20
# What the stage did before: each split decoded into RAM, then saved (one split at a time).
IN_RAM = """
import sys
from pathlib import Path
from pipeline.data.cache import save_cache
from pipeline.data.build import build_cache
from pipeline.data.layout import read_stems
raw, splits, out, size = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4])
for name in ("train", "valid", "test"):
    save_cache(out / name, build_cache(raw, read_stems(splits / f"{name}.txt"), size, "pet", progress=False))
"""


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its reaped children (the pool's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _split_apart(root: Path, stems: list[str], size: int, work: Path, n: int) -> None:
    """The control: ``n`` independent processes, each writing 1/n of the pairs with workers=1."""
    jobs = [
        multiprocessing.get_context("fork").Process(
            target=write_cache, args=(root, stems[i::n], work / f"apart-{i}", size, "pet"), kwargs={"progress": False}
        )
        for i in range(n)
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join()
        assert job.exitcode == 0


def speed(root: Path, size: int, rounds: int, work: Path) -> list[dict]:
    """Images/s and CPU ms a pair on every pair of ``root``: write_cache with workers 1 and all, and the
    control (all cores as independent processes, no pool: what the machine allows right now), interleaved."""
    stems = read_stems(root / "annotations" / "list.txt")
    cores = os.cpu_count() or 1
    runs = {
        "write_cache, workers=1": lambda: write_cache(root, stems, work / "one", size, "pet", progress=False),
        f"write_cache, workers={cores}": lambda: write_cache(
            root, stems, work / "all", size, "pet", workers=cores, progress=False
        ),
        f"control: {cores} independent processes": lambda: _split_apart(root, stems, size, work, cores),
    }
    rates, costs = {name: [] for name in runs}, {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            cpu, start = cpu_seconds(), time.perf_counter()
            run()
            rates[name].append(len(stems) / (time.perf_counter() - start))
            costs[name].append(1000 * (cpu_seconds() - cpu) / len(stems))
            for folder in work.glob("[oa]*"):
                shutil.rmtree(folder)
    base = statistics.median(rates["write_cache, workers=1"])
    return [
        {
            "run": name,
            "images/s (median)": f"{statistics.median(rates[name]):.1f}",
            "each round": " ".join(f"{r:.0f}" for r in rates[name]),
            "vs workers=1": f"{statistics.median(rates[name]) / base:.2f}x",
            "CPU ms a pair": f"{statistics.median(costs[name]):.2f}",
        }
        for name in runs
    ]


def subset(full: Path, n: int, dest: Path) -> Path:
    """The first ``n`` pairs of ``full`` as a dataset folder (list files cut, images and trimaps linked)."""
    (dest / "annotations").mkdir(parents=True)
    (dest / "images").symlink_to(full / "images")
    (dest / "annotations" / "trimaps").symlink_to(full / "annotations" / "trimaps")
    keep = set(read_stems(full / "annotations" / "list.txt")[:n])
    for name in LIST_FILES:
        lines = (full / "annotations" / name).read_text().splitlines(keepends=True)
        (dest / "annotations" / name).write_text("".join(s for s in lines if s.startswith("#") or s.split()[0] in keep))
    return dest


def peak_memory(command: list[str]) -> dict:
    """Run ``command`` from the repository; its peak memory in MB and its seconds.

    ``largest``: the peak RSS of its largest process (``os.wait4``'s ru_maxrss, which covers the
    children it reaped: the pool's workers); ``rss``, ``pss``: the peaks of the sums over its process
    tree, sampled every 50 ms.
    """
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    top = psutil.Process(proc.pid)
    rss = pss = 0
    start = time.perf_counter()
    # wait4 without blocking until the command ends: it reaps it and returns its rusage.
    while not (done := os.wait4(proc.pid, os.WNOHANG))[0]:
        tree_rss = tree_pss = 0
        try:
            for p in [top, *top.children(recursive=True)]:
                info = p.memory_full_info()
                tree_rss, tree_pss = tree_rss + info.rss, tree_pss + info.pss
        except psutil.Error:  # a process ended between the listing and the reading
            continue
        rss, pss = max(rss, tree_rss), max(pss, tree_pss)
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(done[1])  # reaped above: Popen must not wait for it
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {proc.stderr.read()}")
    # ru_maxrss is in kB on Linux.
    return {"largest": done[2].ru_maxrss / 1024, "rss": rss / MB, "pss": pss / MB, "seconds": seconds}


def memory(counts: list[int], size: int, work: Path) -> list[dict]:
    """Peak memory of the stage and of the in-RAM build on synthetic sets of ``counts`` pairs."""
    full = work / "synthetic"
    print(f"generating {max(counts)} synthetic pairs ...", file=sys.stderr, flush=True)
    make_synthetic(full, max(counts), seed=0)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["image_size"], params["preprocess"]["workers"] = size, "auto"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    rows, stage = [], [sys.executable, "-m", "stages.preprocess", "--params", str(work / "params.yaml")]
    for n in counts:
        raw, splits = subset(full, n, work / f"raw-{n}"), work / f"splits-{n}"
        split = [sys.executable, "-m", "stages.split", "--params", str(work / "params.yaml"), "--raw", str(raw)]
        subprocess.run([*split, "--out", str(splits)], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
        streamed = [*stage, "--raw", str(raw), "--splits", str(splits), "--out", str(work / "cache")]
        streamed += ["--report", str(work / "data.json")]
        in_ram = [sys.executable, "-c", IN_RAM, str(raw), str(splits), str(work / "in-ram"), str(size)]
        for name, command, out in (
            ("stage (streamed, mapped)", streamed, "cache"),
            ("in RAM, then saved", in_ram, "in-ram"),
        ):
            print(f"{name}: {n} pairs ...", file=sys.stderr, flush=True)
            peak = peak_memory(command)
            disk = sum(f.stat().st_size for f in (work / out).rglob("*") if f.is_file()) / MB
            shutil.rmtree(work / out)
            rows.append(
                {
                    "pairs": n,
                    "how": name,
                    "peak RSS, largest process (MB)": f"{peak['largest']:.0f}",
                    "peak RSS, tree sum (MB)": f"{peak['rss']:.0f}",
                    "peak PSS, tree sum (MB)": f"{peak['pss']:.0f}",
                    "cache on disk (MB)": f"{disk:.0f}",
                    "seconds": f"{peak['seconds']:.0f}",
                }
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pets", default=str(REPO.parent / "shared/data/oxford-iiit-pet-mini"))
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        before = machine()
        fast = speed(Path(args.pets), args.size, args.rounds, Path(tmp))
        pets = len(read_stems(Path(args.pets) / "annotations" / "list.txt"))
        print(f"Machine at the start: {before}\n")
        print(f"Decode speed, write_cache on the {pets} real pairs at {args.size} px, {args.rounds} rounds:\n")
        print(table(fast) + "\n", flush=True)
        mem = memory(args.images, args.size, Path(tmp))
        print(f"Peak memory, synthetic pairs at {args.size} px, workers auto ({os.cpu_count()}):\n")
        print(table(mem) + "\n")
        print(f"Machine at the end: {machine()}")


if __name__ == "__main__":
    main()
