"""`petseg --help`, argument errors and `petseg params` answer without loading torch; option spellings."""

import subprocess
import sys

import pytest

from pipeline.cli.main import build_parser
from tests.support import REPO

PROBE = """
import sys
from pipeline.cli.main import main
code = main(sys.argv[1:])
print("torch" in sys.modules, code, file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("argv", "code"),
    [
        (["--help"], 0),
        (["predict", "--help"], 0),
        (["diff", "--help"], 0),
        (["params", "--help"], 0),
        (["params", "--markdown"], 0),
        (["predict", "photo.jpg"], 2),  # --weights and --out missing
        (["predict", "--weights", "m.pt", "--out", "o", "photo.jpg", "--threshold", "2"], 2),
        (["nosuch"], 2),
    ],
)
def test_help_argument_errors_and_params_never_import_torch(argv, code):
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stderr.splitlines()[-1] == f"False {code}", done.stderr  # no torch, and the exit status
    if code == 0:
        assert done.stdout.startswith("| key |" if "--markdown" in argv else "usage: petseg")


def test_diff_and_params_take_both_spellings_of_the_markdown_option():
    parser = build_parser()
    assert parser.parse_args(["diff", "--md"]).md and parser.parse_args(["diff", "--markdown"]).md
    assert not parser.parse_args(["diff"]).md
    assert parser.parse_args(["params", "--md"]).markdown and parser.parse_args(["params", "--markdown"]).markdown
    assert not parser.parse_args(["params"]).markdown
