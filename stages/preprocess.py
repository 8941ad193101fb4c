"""Stage `preprocess`: decode, resize and binarise every split once into uint8 .npz caches, skipping
bad pairs, and report what was skipped (a DVC metrics file)."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.cache import save_cache
from pipeline.data import build_cache
from pipeline.data_report import SPLITS, build_report, check_report, read_split_summary, summary_line
from pipeline.errors import run_stage
from pipeline.io import atomic_path, write_json
from pipeline.layout import read_stems
from pipeline.params import load_params


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read image_size, preprocess.* and data.max_bad_fraction, write one .npz cache per
    split and the data report. Raises UserError (after writing the report, and without the cache
    folder) when more than data.max_bad_fraction of the listed pairs were skipped or a split is empty.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--raw", required=True, help="dataset folder in the official layout")
    parser.add_argument("--splits", required=True, help="folder with train.txt, valid.txt, test.txt, summary.json")
    parser.add_argument("--out", required=True, help="folder for train.npz, valid.npz, test.npz")
    parser.add_argument("--report", required=True, help="JSON metrics file of the skipped pairs (metrics/data.json)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    size, boundary = params.image_size, params.preprocess.boundary
    listed, list_skips = read_split_summary(Path(args.splits) / "summary.json")
    used, split_skips = {}, {}
    # All three splits or none: a failed check must not leave train.npz behind.
    with atomic_path(args.out) as out:
        for name in SPLITS:
            cache = build_cache(Path(args.raw), read_stems(Path(args.splits) / f"{name}.txt"), size, boundary)
            save_cache(out / f"{name}.npz", cache)
            used[name], split_skips[name] = len(cache.stems), list(cache.skipped)
            print(f"preprocess: {name}: {len(cache.stems)} images at {size}x{size}")
        report = build_report(listed, list_skips, used, split_skips)
        write_json(args.report, report)
        print(f"preprocess: {summary_line(report)}; see {args.report}")
        check_report(report, params.data.max_bad_fraction, args.report)


if __name__ == "__main__":
    sys.exit(run_stage(main))
