"""Stage `split`: official trainval.txt → train/valid, test.txt → test; writes the stem lists."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.cli import run_stage
from pipeline.data import make_split
from pipeline.io import write_json, write_lines
from pipeline.params import get_float, get_int, load_params, section


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read split.* params, write the three stem lists and summary.json. Raises UserError."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--raw", required=True, help="dataset folder in the official layout")
    parser.add_argument("--out", required=True, help="folder for train.txt, valid.txt, test.txt, summary.json")
    args = parser.parse_args(argv)
    params = section(load_params(args.params), "split")
    valid_fraction = get_float(params, "valid_fraction", "split.", minimum=0.0, maximum=1.0)
    split = make_split(Path(args.raw), valid_fraction, get_int(params, "seed", "split.", minimum=0))
    out = Path(args.out)
    for name in ("train", "valid", "test"):
        write_lines(out / f"{name}.txt", getattr(split, name))
    counts = {name: len(getattr(split, name)) for name in ("train", "valid", "test")}
    write_json(out / "summary.json", {**counts, "skipped_missing_files": split.skipped})
    print(f"split: {counts}; skipped (listed without image or trimap): {split.skipped}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
