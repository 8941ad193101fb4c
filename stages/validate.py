"""Stage `validate`: check the whole params file against the schema before any other stage runs.

It depends on every key of params.yaml, so a key no stage reads (a misspelt `learning_rate`, an
appended `-S +learning_rate=...`) still reruns it, and the run fails here in one line naming the key
and the nearest valid one. It writes what decides the download (see DownloadInputs), so that stage
reruns only when its own source's keys change.

With ``device: auto`` and no GPU, a run that would train for over an hour on this CPU stops here, before the
download, in one line with the estimate and the two ways on (pipeline/train/cpu_guard.py).
"""

import argparse
import sys
from collections.abc import Sequence

from pipeline.core.io import write_json
from pipeline.core.params import download_inputs, load_params
from pipeline.core.runner import run_stage
from pipeline.train.cpu_guard import check_cpu_time


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, validate --params, check the CPU time, write --download-inputs (JSON). Raises UserError on a
    bad params file or a CPU run of over an hour (:func:`pipeline.train.cpu_guard.check_cpu_time`)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--download-inputs", required=True, help="output .json: the download stage's inputs")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    estimate = check_cpu_time(params)
    if estimate:
        print(estimate)
    write_json(args.download_inputs, download_inputs(params.data).model_dump(exclude_none=True))
    print(f"validate: {args.params} matches the schema")


if __name__ == "__main__":
    sys.exit(run_stage(main))
