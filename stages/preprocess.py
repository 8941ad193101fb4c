"""Stage `preprocess`: decode, resize and label every split once into a memory-mappable cache (a
folder of uint8 .npy arrays per split, see pipeline/data/cache.py), skipping bad pairs, and report what was
skipped (a DVC metrics file). Pairs are decoded by preprocess.workers processes and written a pair at
a time, so the stage's RAM does not grow with the dataset."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.io import atomic_path, write_json
from pipeline.core.messages import plural
from pipeline.core.params import load_params
from pipeline.core.runner import run_stage
from pipeline.data.archives import opened
from pipeline.data.balance import class_report
from pipeline.data.build import resolve_workers, write_cache
from pipeline.data.cache import load_cache
from pipeline.data.geometry import Resize, describe
from pipeline.data.layout import read_stems
from pipeline.data.report import SPLITS, build_report, check_report, read_split_summary, skipped_metric, summary_line


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read image_size, task, preprocess.* and data.max_bad_fraction, write one cache folder per
    split (``<out>/train``, ``valid``, ``test``) and the data report. Raises UserError (after writing
    the report, and without the cache folder) when more than data.max_bad_fraction of the listed pairs
    were skipped or a split is empty.
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument(
        "--raw", required=True, help="the download stage's folder: the two archives, or the dataset's folder"
    )
    parser.add_argument("--splits", required=True, help="folder with train.txt, valid.txt, test.txt, summary.json")
    parser.add_argument("--out", required=True, help="folder for the train, valid and test cache folders")
    parser.add_argument("--metrics", required=True, help="output .json: the count of skipped pairs (a DVC metric)")
    parser.add_argument("--report", required=True, help="output .json: the skipped pairs, their reasons and fixes")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    resize = Resize(params.preprocess.resize, params.cache_side)
    boundary, task = params.preprocess.boundary, params.task
    workers = resolve_workers(params.preprocess.workers)
    listed, list_skips = read_split_summary(Path(args.splits) / "summary.json")
    used, split_skips = {}, {}
    # All three splits or none: a failed check must not leave the train cache behind.
    with opened(Path(args.raw)) as root, atomic_path(args.out) as out:
        for name in SPLITS:
            stems = read_stems(Path(args.splits) / f"{name}.txt")
            used[name], split_skips[name] = write_cache(root, stems, out / name, resize, boundary, workers, task=task)
            images, processes = plural(used[name], "image"), plural(workers, "decode process")
            print(f"preprocess: {name}: {used[name]} {images} {describe(resize)} ({workers} {processes})")
        report = build_report(listed, list_skips, used, split_skips)
        train = load_cache(out / "train")
        report["train_classes"] = class_report(train.classes.names, train.counts)
        write_json(args.report, report)
        write_json(args.metrics, skipped_metric(report))
        print(f"preprocess: {summary_line(report)}; see {args.report}")
        check_report(report, params.data.max_bad_fraction, args.report)


if __name__ == "__main__":
    sys.exit(run_stage(main))
