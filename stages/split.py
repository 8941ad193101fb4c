"""Stage `split`: official trainval.txt → train/valid, test.txt → test (a folder dataset: its splits/ or a
seeded draw); writes the stem lists."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.io import atomic_path, write_json, write_lines
from pipeline.core.params import load_params
from pipeline.core.runner import run_stage
from pipeline.data.archives import opened
from pipeline.data.report import SPLITS, skipped_to_json
from pipeline.data.split import split_dataset


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read split.* params, write the three stem lists and summary.json. Raises UserError.

    summary.json holds the split sizes, the entries of each list file (``listed``) and the entries
    left out per list file (``skipped``: item, reason, detail), which the preprocess stage reports.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument(
        "--raw", required=True, help="the download stage's folder: the two archives, or the dataset's folder"
    )
    parser.add_argument("--out", required=True, help="folder for train.txt, valid.txt, test.txt, summary.json")
    args = parser.parse_args(argv)
    params = load_params(args.params).split
    with opened(Path(args.raw)) as root:
        split = split_dataset(root, params.valid_fraction, params.test_fraction, params.seed)
    counts = {name: len(getattr(split, name)) for name in SPLITS}
    # All four files or none: stem lists from one run must not meet the summary of another.
    with atomic_path(args.out) as out:
        for name in SPLITS:
            write_lines(out / f"{name}.txt", getattr(split, name))
        write_json(out / "summary.json", {**counts, "listed": split.listed, "skipped": skipped_to_json(split.skipped)})
    skipped = {name: len(entries) for name, entries in split.skipped.items()}
    print(f"split: {counts}; entries skipped (see summary.json): {skipped}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
