"""Stage `download`: the dataset in the official layout, from data.source."""

import argparse
import sys
from collections.abc import Sequence

from pipeline.cli import run_stage
from pipeline.download import prepare_dataset
from pipeline.params import get_int, get_str, load_params, section


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read data.* params, fill --out with the dataset. Raises UserError (see prepare_dataset)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--out", required=True, help="folder to fill with images/ and annotations/")
    args = parser.parse_args(argv)
    data = section(load_params(args.params), "data")
    source = get_str(data, "source", "data.")
    synthetic = source == "synthetic"
    done = prepare_dataset(
        source,
        args.out,
        url=get_str(data, "url", "data."),
        synthetic_images=get_int(data, "synthetic_images", "data.", minimum=4) if synthetic else 0,
        synthetic_seed=get_int(data, "synthetic_seed", "data.", minimum=0) if synthetic else 0,
    )
    print(f"download: {done} → {args.out}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
