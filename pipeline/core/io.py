"""Atomic writes: an output is either complete or absent, never half-written."""

import glob
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    Works for files and directories. On an exception the temporary is removed and ``path`` is
    left as it was. Parent directories are created. A directory is replaced by moving the old one
    aside first (a directory cannot be renamed over a non-empty one), so at every instant either
    the old or the new one exists, at ``path`` or aside; what a killed writer left behind (its
    temporary, or an old directory it had moved aside) is cleaned up, or put back, on the next call.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _recover(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    _remove(tmp)
    try:
        yield tmp
        _replace(tmp, path)
    finally:
        _remove(tmp)


def _replace(tmp: Path, path: Path) -> None:
    if not (path.is_dir() and not path.is_symlink()):
        os.replace(tmp, path)
        return
    old = path.with_name(f".{path.name}.old-{os.getpid()}")
    _remove(old)
    os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old, path)
        raise
    shutil.rmtree(old)


def _recover(path: Path) -> None:
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.*-*"):
        kind, _, pid = leftover.name[len(path.name) + 2 :].partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit() or _alive(int(pid)):
            continue  # not ours, or another process is writing it right now
        if kind == "old" and not path.exists():
            os.replace(leftover, path)  # killed between moving the old aside and moving the new in
        else:
            _remove(leftover)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a temporary of this process is stale by the time a new write starts
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    # A killed writer stays a zombie until its parent reaps it (a container's PID 1 may never do
    # so): it exists, but writes nothing more.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:  # no /proc (not Linux): assume it is still writing
        return True
    return state != "Z"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON with a trailing newline, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def write_lines(path: str | Path, lines: list[str]) -> None:
    """Write one string per line, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in lines))


def write_csv(path: str | Path, table: pd.DataFrame) -> None:
    """Write a pandas table as CSV (header, no index), atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)
