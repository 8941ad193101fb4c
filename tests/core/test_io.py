"""Atomic writes: complete or absent, and what a killed writer leaves behind is recovered."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.core.io import _alive, atomic_path


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def write_dir(path, text):
    path.mkdir()
    (path / "a.txt").write_text(text)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    out = tmp_path / "out.txt"
    out.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert out.read_text() == "old" and leftovers(tmp_path) == []


def test_a_directory_is_replaced_whole(tmp_path):
    out = tmp_path / "cache"
    write_dir(out, "old")
    (out / "stale.txt").write_text("only in the old one")
    with atomic_path(out) as tmp:
        write_dir(tmp, "new")
    assert sorted(p.name for p in out.iterdir()) == ["a.txt"] and (out / "a.txt").read_text() == "new"
    assert leftovers(tmp_path) == []


def test_the_old_directory_comes_back_if_the_new_cannot_be_moved_in(tmp_path, monkeypatch):
    out = tmp_path / "cache"
    write_dir(out, "old")
    real = os.replace

    def replace(src, dst):
        if ".tmp-" in str(src):
            raise OSError("disk gone")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError, match="disk gone"), atomic_path(out) as tmp:
        write_dir(tmp, "new")
    assert (out / "a.txt").read_text() == "old" and leftovers(tmp_path) == []


def test_leftovers_of_a_killed_writer_are_removed(tmp_path):
    out = tmp_path / "cache"
    write_dir(out, "current")
    pid = dead_pid()
    write_dir(tmp_path / f".cache.tmp-{pid}", "half-written")
    write_dir(tmp_path / f".cache.old-{pid}", "moved aside, new already in place")
    with atomic_path(out) as tmp:
        write_dir(tmp, "new")
    assert (out / "a.txt").read_text() == "new" and leftovers(tmp_path) == []


def test_an_old_directory_moved_aside_by_a_killed_writer_is_put_back(tmp_path):
    out = tmp_path / "cache"
    write_dir(tmp_path / f".cache.old-{dead_pid()}", "old")  # killed between the two renames
    with pytest.raises(RuntimeError), atomic_path(out):
        raise RuntimeError("this write fails too")
    assert (out / "a.txt").read_text() == "old" and leftovers(tmp_path) == []


def test_a_temporary_of_a_live_writer_is_left_alone(tmp_path):
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_dir(tmp_path / f".cache.tmp-{live.pid}", "being written")
        (tmp_path / ".cache.tmp-notapid").write_text("not one of ours")
        with atomic_path(tmp_path / "cache") as tmp:
            write_dir(tmp, "new")
        assert leftovers(tmp_path) == sorted([".cache.tmp-notapid", f".cache.tmp-{live.pid}"])
    finally:
        live.kill()
        live.wait()


def test_a_killed_but_unreaped_writer_counts_as_dead(monkeypatch):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _alive(proc.pid)
        proc.kill()
        for _ in range(500):  # until the kernel has made it a zombie (it is not reaped: no wait yet)
            if not _alive(proc.pid):
                break
            time.sleep(0.01)
        assert not _alive(proc.pid)
    finally:
        proc.wait()
    assert not _alive(proc.pid)  # reaped: gone
    monkeypatch.setattr(Path, "read_text", lambda self: (_ for _ in ()).throw(OSError("no /proc")))
    assert _alive(os.getppid())  # without /proc a live process is taken as writing
