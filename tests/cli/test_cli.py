"""The petseg command line answers `--help` and argument errors without loading torch."""

import subprocess
import sys

import pytest

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
        (["predict", "photo.jpg"], 2),  # --weights and --out missing
        (["predict", "--weights", "m.pt", "--out", "o", "photo.jpg", "--threshold", "2"], 2),
        (["nosuch"], 2),
    ],
)
def test_help_and_argument_errors_never_import_torch(argv, code):
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.stderr.splitlines()[-1] == f"False {code}", done.stderr  # no torch, and the exit status
    if code == 0:
        assert done.stdout.startswith("usage: petseg")
