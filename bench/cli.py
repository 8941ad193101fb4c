"""Benchmark: how long `petseg --help` takes, against what it cost when the parser imported the model code.

Usage: python bench/cli.py [--repeats 5]

Each repetition runs, in fresh interpreters and alternating, ``python -m pipeline --help`` (the petseg
command: its parser imports no torch) and ``python -m pipeline --help`` after ``import
pipeline.cli.predict`` (torch, torchvision, the models: what building the parser imported before
the command's imports were made lazy). The table gives the median seconds of each and their ratio.

Not a test: times vary with load and the disk cache; the ratio measured in one run is the point.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import machine, table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COMMANDS = {
    "petseg --help": [sys.executable, "-m", "pipeline", "--help"],
    "the same after importing the model code": [
        sys.executable,
        "-c",
        "import pipeline.cli.predict; from pipeline.cli.main import main; main(['--help'])",
    ],
}


def seconds(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    for cmd in COMMANDS.values():  # warm the disk cache for both
        seconds(cmd)
    times = {name: [] for name in COMMANDS}
    for rep in range(args.repeats):
        names = list(COMMANDS) if rep % 2 == 0 else list(reversed(COMMANDS))
        for name in names:
            times[name].append(seconds(COMMANDS[name]))
    fast, slow = (statistics.median(times[name]) for name in COMMANDS)
    print(machine())
    rows = [{"command": name, "median s": f"{statistics.median(t):.2f}"} for name, t in times.items()]
    print(table(rows))
    print(f"`petseg --help` answers {slow / fast:.1f}x sooner than with the model code imported")


if __name__ == "__main__":
    main()
