"""Stage `download`: the dataset as its two official tarballs, from data.source."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.core.params import read_download_inputs
from pipeline.core.runner import run_stage
from pipeline.data.download import prepare_dataset


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read the data keys the validate stage kept for this source, fill --out with the dataset.

    Raises UserError (see prepare_dataset).
    """
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", required=True, help="the validate stage's .json of the data keys in use")
    parser.add_argument("--downloads", required=True, help="persistent folder for the tarballs (kept between runs)")
    parser.add_argument("--out", required=True, help="folder to fill with images.tar.gz and annotations.tar.gz")
    args = parser.parse_args(argv)
    data = read_download_inputs(args.inputs)
    kwargs = data.model_dump(exclude_none=True, exclude={"source"})
    done = prepare_dataset(data.source, args.out, downloads=Path(args.downloads), **kwargs)
    print(f"download: {done} → {args.out}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
