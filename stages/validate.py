"""Stage `validate`: check the whole params file against the schema before any other stage runs.

It depends on every key of params.yaml, so a key no stage reads (a misspelt `learning_rate`, an
appended `-S +learning_rate=...`) still reruns it, and the run fails here in one line naming the key
and the nearest valid one. It writes what decides the download (see DownloadInputs), so that stage
reruns only when its own source's keys change.
"""

import argparse
import sys
from collections.abc import Sequence

from pipeline.core.io import write_json
from pipeline.core.params import download_inputs, load_params
from pipeline.core.runner import run_stage


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, validate --params, write --download-inputs (JSON). Raises UserError on a bad params file."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--download-inputs", required=True, help="output .json: the download stage's inputs")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    write_json(args.download_inputs, download_inputs(params.data).model_dump(exclude_none=True))
    print(f"validate: {args.params} matches the schema")


if __name__ == "__main__":
    sys.exit(run_stage(main))
