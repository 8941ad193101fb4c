"""Retries, resume and reuse of downloads, against a scripted HTTP server on 127.0.0.1."""

import hashlib
import http.server
import os
import re
import tarfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import pipeline.data.download
from pipeline.core.errors import UserError
from pipeline.data.archives import opened
from pipeline.data.download import Archive, download, from_tarballs, from_url, prepare_dataset
from pipeline.data.layout import check_layout
from pipeline.data.synthetic import make_synthetic

BODY = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
HALF = len(BODY) // 2


# Local servers only, and the backoff waits recorded instead of slept (fixtures in conftest.py).
pytestmark = pytest.mark.usefixtures("no_proxy", "slept")


@dataclass
class Server:
    """A server's base URL, the files it serves, its script and what it saw.

    ``actions`` is consumed one per request; once empty, requests are served normally (honouring
    ``Range: bytes=N-`` with a 206, or 416 when N is past the end). Actions: "500"; "drop" (announce
    the full length, send half, hang up); "stall" (send half, then go silent until shutdown);
    "ignore-range" (answer 200 with the whole body); "no-length" (no Content-Length, body until close).
    """

    url: str
    files: dict[str, bytes] = field(default_factory=dict)
    actions: list[str] = field(default_factory=list)
    requests: list[tuple[str, str | None]] = field(default_factory=list)  # (path, Range header)
    release: threading.Event = field(default_factory=threading.Event)


class _ScriptedHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, format, *args):
        pass

    def do_GET(self):
        script: Server = self.server.script
        script.requests.append((self.path, self.headers.get("Range")))
        action = script.actions.pop(0) if script.actions else "serve"
        body = script.files.get(self.path.lstrip("/"))
        if body is None or action == "500":
            self.send_error(404 if body is None else 500)
            return
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        start = int(match[1]) if match and action != "ignore-range" else 0
        if start >= len(body):
            self.send_error(416)
            return
        rest = body[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        if action != "no-length":
            self.send_header("Content-Length", str(len(rest)))
        self.end_headers()
        if action in ("drop", "stall"):
            self.wfile.write(rest[: len(rest) // 2])
            self.wfile.flush()
            if action == "stall":
                script.release.wait(10)
            return
        self.wfile.write(rest)


@pytest.fixture
def server():
    """A scripted HTTP server on 127.0.0.1 serving ``BODY`` as /f; shut down after the test."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ScriptedHandler)
    httpd.script = Server(f"http://127.0.0.1:{httpd.server_address[1]}", files={"f": BODY})
    # A short poll interval so that shutdown() returns at once rather than after 0.5 s.
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield httpd.script
    httpd.script.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


PACKED = ["annotations.tar.gz", "images.tar.gz"]  # the download stage's output, in _names order


def _assert_placed(dest: Path, tarballs: dict[str, bytes], origin: Path, linked: bool = True) -> None:
    """``dest`` holds exactly the two tarballs, hard links of those in ``origin`` (copies if not
    ``linked``), and they extract to the official layout of the 4 pets."""
    assert _names(dest) == PACKED
    for name, data in tarballs.items():
        assert (dest / name).read_bytes() == data
        assert os.path.samefile(dest / name, origin / name) == linked
    with opened(dest) as root:
        check_layout(root)
        assert len(list((root / "images").iterdir())) == 4


# --- download: retries and resume --------------------------------------------------------------


def test_dropped_connection_is_retried_with_range_from_bytes_received(server, tmp_path, slept):
    server.actions = ["drop"]
    dest = tmp_path / "dl" / "f"
    download(f"{server.url}/f", dest)
    assert dest.read_bytes() == BODY
    assert server.requests == [("/f", None), ("/f", f"bytes={HALF}-")]
    assert slept == [1.0]
    assert _names(dest.parent) == ["f"]


def test_timeout_is_retried_with_range(server, tmp_path):
    server.actions = ["stall"]
    dest = tmp_path / "f"
    download(f"{server.url}/f", dest, timeout=0.5)
    assert dest.read_bytes() == BODY
    assert server.requests == [("/f", None), ("/f", f"bytes={HALF}-")]


def test_http_500_twice_then_success_backs_off_exponentially(server, tmp_path, slept):
    server.actions = ["500", "500"]
    dest = tmp_path / "f"
    download(f"{server.url}/f", dest, backoff=0.25)
    assert dest.read_bytes() == BODY
    assert server.requests == [("/f", None)] * 3
    assert slept == [0.25, 0.5]


def test_server_ignoring_range_restarts_the_part_from_zero(server, tmp_path):
    server.actions = ["drop", "ignore-range"]
    dest = tmp_path / "f"
    download(f"{server.url}/f", dest)
    assert server.requests == [("/f", None), ("/f", f"bytes={HALF}-")]
    assert dest.read_bytes() == BODY  # not the first half twice over


def test_part_as_long_as_the_file_gets_416_and_is_fetched_afresh(server, tmp_path, slept):
    dest = tmp_path / "f"
    (tmp_path / "f.part").write_bytes(b"x" * len(BODY))
    download(f"{server.url}/f", dest)
    assert dest.read_bytes() == BODY
    assert server.requests == [("/f", f"bytes={len(BODY)}-"), ("/f", None)]
    assert slept == []


def test_response_without_content_length_is_read_to_the_end(server, tmp_path):
    server.actions = ["no-length"]
    download(f"{server.url}/f", tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == BODY


def test_every_attempt_failing_is_one_line_naming_url_and_attempts(server, tmp_path, slept):
    server.actions = ["500"] * 3
    dest = tmp_path / "f"
    with pytest.raises(UserError) as info:
        download(f"{server.url}/f", dest, attempts=3)
    message = str(info.value)
    assert len(message.splitlines()) == 1
    assert f"{server.url}/f" in message and "3 attempts" in message and "HTTP 500" in message
    assert len(server.requests) == 3
    assert slept == [1.0, 2.0]
    assert not dest.exists()


def test_http_404_is_not_retried(server, tmp_path, slept):
    with pytest.raises(UserError, match="404") as info:
        download(f"{server.url}/missing", tmp_path / "missing")
    assert "synthetic" in str(info.value)
    assert server.requests == [("/missing", None)]
    assert slept == []


def test_failed_run_keeps_the_part_and_the_next_run_resumes_it(server, tmp_path):
    server.actions = ["drop"]
    dest = tmp_path / "f"
    with pytest.raises(UserError, match="1 attempts"):
        download(f"{server.url}/f", dest, attempts=1)
    assert not dest.exists()
    assert (tmp_path / "f.part").read_bytes() == BODY[:HALF]
    download(f"{server.url}/f", dest, attempts=1)
    assert server.requests[-1] == ("/f", f"bytes={HALF}-")
    assert dest.read_bytes() == BODY
    assert _names(tmp_path) == ["f"]


def test_file_url_rewrites_a_stale_part(tmp_path):
    source = tmp_path / "source.bin"
    source.write_bytes(BODY)
    dest = tmp_path / "dl" / "f"
    dest.parent.mkdir()
    (dest.parent / "f.part").write_bytes(b"stale")
    download(source.as_uri(), dest)
    assert dest.read_bytes() == BODY


@pytest.mark.parametrize("url", ["not-a-url", "http://127.0.0.1:noport/f"], ids=["no-scheme", "bad-port"])
def test_bad_url_is_one_line_user_error_without_retry(url, tmp_path, slept):
    with pytest.raises(UserError, match="data.url") as info:
        download(url, tmp_path / "f")
    assert url in str(info.value) and len(str(info.value).splitlines()) == 1
    assert slept == []


# --- from_url and prepare_dataset: the persistent downloads folder -------------------------------


@pytest.fixture(scope="module")
def tarballs(tmp_path_factory) -> dict[str, bytes]:
    """images.tar.gz and annotations.tar.gz (a few KB) of a 4-pet synthetic dataset, by name."""
    root = tmp_path_factory.mktemp("pets")
    make_synthetic(root / "pets", 4, seed=3)
    for sub in ("images", "annotations"):
        with tarfile.open(root / f"{sub}.tar.gz", "w:gz") as tar:
            tar.add(root / "pets" / sub, arcname=sub)
    return {name: (root / name).read_bytes() for name in ("images.tar.gz", "annotations.tar.gz")}


@pytest.fixture
def archives(tarballs, monkeypatch) -> tuple[Archive, ...]:
    """The small tarballs' Archive records, standing in for the official ones."""
    small = tuple(Archive(name, hashlib.md5(data).hexdigest(), len(data)) for name, data in tarballs.items())
    monkeypatch.setattr(pipeline.data.download, "OFFICIAL_ARCHIVES", small)
    return small


@pytest.fixture
def served(server, tarballs, archives) -> Server:
    """The scripted server, serving the small tarballs that stand in for the official ones."""
    server.files = dict(tarballs)
    return server


def test_from_url_reuses_verified_tarballs_without_any_request(served, archives, tarballs, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    for name, data in tarballs.items():
        (work / name).write_bytes(data)
    from_url(served.url, tmp_path / "dest", work, archives)
    assert served.requests == []
    _assert_placed(tmp_path / "dest", tarballs, work)


def test_from_url_deletes_and_refetches_a_tarball_with_wrong_md5(served, archives, tarballs, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    (work / "images.tar.gz").write_bytes(b"not the tarball")
    (work / "annotations.tar.gz").write_bytes(tarballs["annotations.tar.gz"])
    from_url(served.url, tmp_path / "dest", work, archives)
    assert served.requests == [("/images.tar.gz", None)]
    assert (work / "images.tar.gz").read_bytes() == tarballs["images.tar.gz"]
    assert _names(work) == PACKED
    _assert_placed(tmp_path / "dest", tarballs, work)


def test_prepare_dataset_failed_run_keeps_part_then_resumes_and_later_runs_reuse(served, archives, tarballs, tmp_path):
    dest, downloads = tmp_path / "data" / "raw", tmp_path / "cache" / "downloads"
    served.actions = ["drop"] * 5  # every try of the default five is cut short
    with pytest.raises(UserError, match="5 attempts"):
        prepare_dataset("oxford-iiit-pet", dest, url=served.url, downloads=downloads)
    assert not dest.exists()
    part = downloads / "images.tar.gz.part"
    received = part.stat().st_size
    assert 0 < received < len(tarballs["images.tar.gz"])

    done = prepare_dataset("oxford-iiit-pet", dest, url=served.url, downloads=downloads)
    assert served.requests[5] == ("/images.tar.gz", f"bytes={received}-")
    assert done == f"the verified official tarballs from {served.url} (kept in {downloads})"
    assert _names(downloads) == PACKED
    _assert_placed(dest, tarballs, downloads)

    seen = len(served.requests)
    prepare_dataset("oxford-iiit-pet", tmp_path / "again" / "raw", url=served.url, downloads=downloads)
    assert len(served.requests) == seen
    _assert_placed(tmp_path / "again" / "raw", tarballs, downloads)


def test_prepare_dataset_default_downloads_folder_is_beside_dest(served, archives, tarballs, tmp_path):
    dest = tmp_path / "data" / "raw"
    prepare_dataset("oxford-iiit-pet", dest, url=served.url)
    assert _names(tmp_path / "data") == ["downloads", "raw"]
    assert _names(tmp_path / "data" / "downloads") == PACKED
    _assert_placed(dest, tarballs, tmp_path / "data" / "downloads")


def test_prepare_dataset_places_a_local_folder_of_verified_tarballs(archives, tarballs, tmp_path):
    folder, dest = tmp_path / "mirror", tmp_path / "data" / "raw"
    folder.mkdir()
    for name, data in tarballs.items():
        (folder / name).write_bytes(data)
    done = prepare_dataset(str(folder), dest)
    assert done == f"the verified official tarballs in {folder}"
    _assert_placed(dest, tarballs, folder, linked=False)  # the user's files: DVC would make links read-only
    assert _names(folder) == PACKED  # the source tarballs are left where they were
    assert _names(tmp_path / "data") == ["raw"]  # a local source needs no downloads folder


def test_from_tarballs_names_a_missing_tarball_and_both_needed(archives, tmp_path):
    with pytest.raises(UserError, match="images.tar.gz: not found; put both images.tar.gz and annotations.tar.gz"):
        from_tarballs(tmp_path, tmp_path / "dest", archives)
