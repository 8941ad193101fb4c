"""die_with_parent (pipeline/core/orphans.py): a child process does not outlive the process that started it."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import REPO

ORPHAN = """
import os, subprocess, sys, time
from pathlib import Path
if sys.argv[1] == "parent":  # start the child, and exit before it calls die_with_parent
    subprocess.Popen([sys.executable, "-c", sys.argv[2], str(os.getpid()), sys.argv[2], sys.argv[3]])
    sys.exit(0)
from pipeline.core.orphans import die_with_parent
out = Path(sys.argv[3])
(out / "pid").write_text(str(os.getpid()))
time.sleep(1)
die_with_parent(int(sys.argv[1]))
(out / "survived").write_text("")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux only")
def test_a_child_whose_parent_is_already_dead_kills_itself(tmp_path):
    subprocess.run([sys.executable, "-c", ORPHAN, "parent", ORPHAN, str(tmp_path)], cwd=REPO, check=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int((tmp_path / "pid").read_text())
    while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}") and "Z" not in _state(pid):
        time.sleep(0.05)
    assert not (tmp_path / "survived").exists()
    assert not os.path.exists(f"/proc/{pid}") or "Z" in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "Z"
