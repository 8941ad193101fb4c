"""The ``petseg`` command (``python -m pipeline``): ``predict``, ``diff``, ``seeds`` and ``params``.

Nothing here imports torch: ``petseg --help`` and a usage error print at once, and each subcommand
imports its code only when it runs.
"""

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.cli import options
from pipeline.core.constants import DEVICES, PRECISIONS, TTA_MODES
from pipeline.core.errors import UserError


def _probability(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:  # NaN fails this too
        raise argparse.ArgumentTypeError(f"must be a number strictly between 0 and 1, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return value


# Each subcommand's line in `petseg --help`, and the description its own --help starts with.
_PREDICT = (
    "write a mask and an overlay for each photo",
    "Write DIR/<stem>_mask.png (the photo's size; a binary model's: 0 background, 255 pet; a multi-class "
    "model's: a palette PNG of class indices in the task's colours) and DIR/<stem>_overlay.png for "
    f"each INPUT: an image file, or a folder (its {' '.join(options.IMAGE_EXTENSIONS)} files, not recursive). "
    "Exit status: 0 if every image was written; 1 if an input could not be read (the others are still "
    "written), no image was found, or the weights, evaluate record, output folder or device are unusable, "
    "or two inputs share a stem (nothing is written); 2 for bad arguments.",
)
_DIFF = (
    "compare each model's test metrics with a git revision, with a confidence interval",
    "Each model's headline metrics (metrics/evaluation/<model>/scores.json) in the workspace against REV, "
    "read through git as `dvc metrics diff` does, and whether its test score (Dice, or mIoU for more than two "
    f"classes) changed by more than the noise: a {100 * options.CONFIDENCE:g} % confidence interval of the "
    "change from a paired bootstrap over the test images (metrics/evaluation/<model>/per_image.csv of both "
    "sides), the number of images that got better and worse, and a verdict: better, worse, or within noise. "
    f"With {options.SEEDS_FILE} (petseg seeds --save), better or worse also needs the change to exceed the "
    "model's range of scores over seeds. Exit status 0, or 1 if something cannot be read.",
)
_SEEDS = (
    "each model's mean and spread of test scores over seeds, from dvc exp show --csv",
    "Group the experiments of `dvc exp show --csv` (run here, or CSV: a file it wrote, - for stdin) by their params "
    "but seed, and print per setting and model the runs, mean, sample standard deviation, min, max and range of "
    "the test score (Dice, or mIoU for more than two classes): the noise of one training. `make seeds` queues "
    "the runs (docs/training.md). Exit status 0, or 1 if there is no setting of two runs or more.",
)
_PARAMS = (
    "list every params.yaml key: the values it takes, its default and what it does",
    "Every key of params.yaml, from the schema (pipeline/core/param_schema.py and param_training.py): "
    "the values it takes, its default (required: the file must set it) and what it does. Exit status 0.",
)


def build_parser() -> argparse.ArgumentParser:
    """The ``petseg`` argument parser: one subcommand per action (``predict``, ``diff``, ``seeds``, ``params``)."""
    parser = argparse.ArgumentParser(
        prog="petseg", description="petseg: segmentation of photos (pets, or your classes)."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (summary, description), add_arguments in (
        ("predict", _PREDICT, _predict_arguments),
        ("diff", _DIFF, _diff_arguments),
        ("seeds", _SEEDS, _seeds_arguments),
        ("params", _PARAMS, _params_arguments),
    ):
        add_arguments(commands.add_parser(name, help=summary, description=description))
    return parser


def _predict_arguments(predict: argparse.ArgumentParser) -> None:
    predict.add_argument("inputs", nargs="+", metavar="INPUT", help="image files and/or folders of images")
    predict.add_argument(
        "--weights", required=True, metavar="PATH", help="a petseg checkpoint (.pt) or ONNX export (.onnx)"
    )
    predict.add_argument("--out", required=True, metavar="DIR", help="output folder (created if missing)")
    predict.add_argument(
        "--threshold",
        type=_probability,
        metavar="T",
        help="pet when probability > T, 0 < T < 1 (default: the weights' <stem>.eval.json record, else 0.5); "
        "a binary model's only: a multi-class model takes each pixel's highest-scoring class",
    )
    predict.add_argument(
        "--tta",
        choices=TTA_MODES,
        help="test-time augmentation (default: the weights' <stem>.eval.json record, else none)",
    )
    _count_option(predict, "--batch-size", options.DEFAULT_BATCH_SIZE, "images per forward pass")
    predict.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda if usable, else cpu")
    predict.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="a .pt's inference precision (auto: bf16 where the device runs it natively, fp16 on older GPUs)",
    )


def _diff_arguments(diff: argparse.ArgumentParser) -> None:
    diff.add_argument(
        "rev", nargs="?", default="HEAD", metavar="REV", help="git revision to compare with (default: HEAD)"
    )
    diff.add_argument(
        "--md", "--markdown", action="store_true", help="print a Markdown table for a pull-request comment"
    )
    _count_option(diff, "--resamples", options.BOOTSTRAP_RESAMPLES, "bootstrap resamples")


def _seeds_arguments(seeds: argparse.ArgumentParser) -> None:
    seeds.add_argument(
        "csv", nargs="?", metavar="CSV", help="what `dvc exp show --csv` printed, - for stdin (default: run it here)"
    )
    seeds.add_argument(
        "--save",
        nargs="?",
        const=options.SEEDS_FILE,
        metavar="PATH",
        help=f"also write the numbers as JSON (default PATH: {options.SEEDS_FILE}, which petseg diff reads)",
    )


def _params_arguments(params: argparse.ArgumentParser) -> None:
    params.add_argument(
        "--markdown", "--md", action="store_true", help="print a Markdown table (the one docs/training.md holds)"
    )


def _count_option(parser: argparse.ArgumentParser, flag: str, default: int, what: str) -> None:
    parser.add_argument(flag, type=_positive_int, default=default, metavar="N", help=f"{what} (default: {default})")


def _predict(args: argparse.Namespace) -> int:
    from pipeline.cli.predict import run

    problems = run(
        args.inputs,
        args.weights,
        args.out,
        threshold=args.threshold,
        tta=args.tta,
        batch_size=args.batch_size,
        device=args.device,
        precision=args.precision,
    )
    return 1 if problems else 0


def _params(args: argparse.Namespace) -> int:
    from pipeline.cli.params_table import render_markdown, render_text, rows

    print((render_markdown if args.markdown else render_text)(rows()), end="")
    return 0


def _diff(args: argparse.Namespace) -> int:
    from pipeline.cli.diff import compare, render_markdown, render_text

    root = Path.cwd()
    diffs, sources = compare(root, args.rev, args.resamples, options.BOOTSTRAP_SEED, options.CONFIDENCE)
    if args.md:
        print(render_markdown(diffs, args.rev, args.resamples, sources.figures), end="")
    else:
        print(render_text(diffs, args.rev, args.resamples), end="")
    return 0


def _seeds(args: argparse.Namespace) -> int:
    from pipeline.cli.seeds import dvc_csv, render_text, save, settings

    if args.csv is None:
        text, where = dvc_csv(Path.cwd()), "dvc exp show --csv"
    elif args.csv == "-":
        text, where = sys.stdin.read(), "stdin"
    else:
        text, where = _read(Path(args.csv)), args.csv
    found = settings(text, where)
    print(render_text(found, where), end="")
    if args.save:
        save(args.save, found)
        print(f"wrote {args.save}")
    return 0


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except (FileNotFoundError, IsADirectoryError):
        raise UserError(f"{path}: no such file; give what `dvc exp show --csv` printed, or no CSV to run it") from None


def main(argv: Sequence[str] | None = None) -> int:
    """The ``petseg`` command: parse ``argv`` (default ``sys.argv[1:]``), run the subcommand.

    Returns the exit status: 0 on success; 1 after a UserError (one ``error:`` line on stderr) or
    when some inputs could not be predicted; 2 for bad arguments (argparse's usage message); 130 on
    Ctrl-C. Any other exception is a bug and propagates with its traceback.
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help or a usage error, already printed by argparse
        return exit_.code if isinstance(exit_.code, int) else 1
    try:
        return {"predict": _predict, "diff": _diff, "seeds": _seeds, "params": _params}[args.command](args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        # Outputs are written atomically, so an interrupted run leaves no half-written file.
        print(f"interrupted: petseg {args.command}; nothing is half-written, run it again", file=sys.stderr)
        return 130
