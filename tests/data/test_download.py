import hashlib
import http.client
import http.server
import io
import json
import os
import socket
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import pipeline.data.download
import stages.download
from pipeline.core.errors import UserError
from pipeline.core.runner import run_stage
from pipeline.data.archives import ARCHIVES, extract, members, opened
from pipeline.data.download import Archive, download, from_url, prepare_dataset
from pipeline.data.layout import check_layout
from pipeline.data.synthetic import make_synthetic

# Local servers only, and the backoff waits recorded instead of slept (fixtures in conftest.py).
pytestmark = pytest.mark.usefixtures("no_proxy", "slept")


# What the download stage's output holds now: the two official archives, nothing else.
PACKED = sorted(ARCHIVES.values())


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fake_pets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fake_pets")
    make_synthetic(root, 8, seed=5)
    return root


@pytest.fixture(scope="module")
def tarballs(fake_pets, tmp_path_factory) -> Path:
    """A folder holding images.tar.gz (images/...) and annotations.tar.gz (annotations/...)."""
    folder = tmp_path_factory.mktemp("tarballs")
    for sub in ("images", "annotations"):
        with tarfile.open(folder / f"{sub}.tar.gz", "w:gz") as tar:
            tar.add(fake_pets / sub, arcname=sub)
    return folder


@pytest.fixture(scope="module")
def archives(tarballs) -> tuple[Archive, ...]:
    return tuple(
        Archive(name, _md5(tarballs / name), (tarballs / name).stat().st_size)
        for name in ("images.tar.gz", "annotations.tar.gz")
    )


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


def _serve(handler):
    """Run an HTTP server on 127.0.0.1 in a thread; yield its base URL, then shut it down."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def server(tarballs):
    """Base URL of an HTTP server on 127.0.0.1 serving the tarball folder."""
    yield from _serve(partial(_QuietHandler, directory=str(tarballs)))


@pytest.fixture
def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _assert_packed(dest: Path, expected: Path) -> None:
    """``dest`` holds exactly the two archives, and they extract to the files of ``expected``."""
    assert _leftovers(dest) == PACKED
    with opened(dest) as root:
        assert root != dest
        check_layout(root)
        assert _files(root) == _files(expected)
    assert not root.exists()


def _record(folder: Path, name: str) -> Archive:
    return Archive(name, _md5(folder / name), (folder / name).stat().st_size)


def _stand_in(monkeypatch, folder: Path) -> tuple[Archive, ...]:
    """Records of the two tarballs in ``folder`` standing in for the official ones (their MD5s)."""
    records = tuple(_record(folder, name) for name in ("images.tar.gz", "annotations.tar.gz"))
    monkeypatch.setattr(pipeline.data.download, "OFFICIAL_ARCHIVES", records)
    return records


# --- from_url over a real local HTTP server -----------------------------------------------------


def test_from_url_downloads_verifies_and_places_the_tarballs(server, archives, tarballs, fake_pets, tmp_path):
    dest, work = tmp_path / "dest", tmp_path / "work"
    from_url(server, dest, work, archives)
    assert _leftovers(work) == PACKED
    for name in PACKED:
        assert (dest / name).read_bytes() == (tarballs / name).read_bytes()
        assert os.path.samefile(dest / name, work / name)  # a hard link, not a second copy
    _assert_packed(dest, fake_pets)


def test_from_url_accepts_trailing_slash(server, archives, fake_pets, tmp_path):
    from_url(server + "/", tmp_path / "dest", tmp_path / "work", archives)
    _assert_packed(tmp_path / "dest", fake_pets)


def test_from_url_wrong_md5_raises_and_places_nothing(server, archives, tmp_path):
    bad = (Archive(archives[0].name, "0" * 32, archives[0].size), archives[1])
    dest = tmp_path / "dest"
    with pytest.raises(UserError, match="MD5") as info:
        from_url(server, dest, tmp_path / "work", bad)
    assert "images.tar.gz" in str(info.value)
    assert _leftovers(dest) == []


# --- prepare_dataset ----------------------------------------------------------------------------


def test_prepare_dataset_from_tarball_folder_rejects_unofficial_md5_and_leaves_no_dest(tarballs, tmp_path):
    dest = tmp_path / "out" / "raw"
    with pytest.raises(UserError, match="MD5"):
        prepare_dataset(str(tarballs), dest)
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_prepare_dataset_official_source_with_unofficial_tarballs_leaves_no_dest(server, tmp_path):
    dest = tmp_path / "out" / "raw"
    with pytest.raises(UserError, match="MD5"):
        prepare_dataset("oxford-iiit-pet", dest, url=server)
    assert not dest.exists()
    assert _leftovers(dest.parent) == ["downloads"]
    assert _leftovers(dest.parent / "downloads") == ["images.tar.gz"]  # the next run checks it again


def test_prepare_dataset_packs_local_folder_in_official_layout(fake_pets, tmp_path):
    dest = tmp_path / "out" / "raw"
    done = prepare_dataset(str(fake_pets), dest)
    assert done == f"packed the dataset in {fake_pets} as the two archives"
    _assert_packed(dest, fake_pets)
    assert _leftovers(dest.parent) == ["raw"]


def test_prepare_dataset_replaces_existing_dest(fake_pets, tmp_path):
    dest = tmp_path / "raw"
    (dest / "stale").mkdir(parents=True)
    (dest / "stale" / "old.txt").write_text("old")
    prepare_dataset(str(fake_pets), dest)
    assert not (dest / "stale").exists()
    _assert_packed(dest, fake_pets)


def test_prepare_dataset_failure_keeps_existing_dest(tmp_path):
    dest = tmp_path / "raw"
    dest.mkdir()
    (dest / "keep.txt").write_text("keep")
    with pytest.raises(UserError):
        prepare_dataset(str(tmp_path / "missing"), dest)
    assert _files(dest) == {"keep.txt": b"keep"}


def test_prepare_dataset_missing_folder_raises_naming_it(tmp_path):
    missing, dest = tmp_path / "no_such_folder", tmp_path / "raw"
    with pytest.raises(UserError, match="no_such_folder"):
        prepare_dataset(str(missing), dest)
    assert not dest.exists()


def test_prepare_dataset_folder_in_neither_layout_raises_naming_it(tmp_path):
    folder, dest = tmp_path / "random_stuff", tmp_path / "raw"
    (folder / "images").mkdir(parents=True)
    (folder / "notes.txt").write_text("not a dataset")
    with pytest.raises(UserError, match="random_stuff") as info:
        prepare_dataset(str(folder), dest)
    assert "annotations" in str(info.value)
    assert not dest.exists()


def test_prepare_dataset_folder_with_only_one_tarball_is_not_taken_for_tarballs(tarballs, tmp_path):
    folder, dest = tmp_path / "half", tmp_path / "raw"
    folder.mkdir()
    (folder / "images.tar.gz").write_bytes((tarballs / "images.tar.gz").read_bytes())
    with pytest.raises(UserError, match="half"):
        prepare_dataset(str(folder), dest)
    assert not dest.exists()


def test_prepare_dataset_synthetic(tmp_path):
    dest = tmp_path / "out" / "raw"
    done = prepare_dataset("synthetic", dest, synthetic_images=6, synthetic_seed=2)
    assert done == "generated 6 synthetic pets (seed 2), packed as the two archives"
    reference = tmp_path / "reference"
    make_synthetic(reference, 6, seed=2)
    _assert_packed(dest, reference)
    with opened(dest) as root:
        assert len(list((root / "images").iterdir())) == 6
    assert _leftovers(dest.parent) == ["raw"]  # neither the generated folder nor a scratch copy is left


# --- download -----------------------------------------------------------------------------------


def test_download_fetches_file(server, tarballs, tmp_path):
    dest = tmp_path / "dl" / "images.tar.gz"
    download(f"{server}/images.tar.gz", dest)
    assert dest.read_bytes() == (tarballs / "images.tar.gz").read_bytes()
    assert _leftovers(dest.parent) == ["images.tar.gz"]


def test_download_no_network_names_other_sources_and_writes_nothing(closed_port, tmp_path, slept):
    dest = tmp_path / "dl" / "x"
    url = f"http://127.0.0.1:{closed_port}/x"
    with pytest.raises(UserError, match="synthetic") as info:
        download(url, dest, timeout=5)
    assert url in str(info.value) and "5 attempts" in str(info.value)
    assert slept == [1.0, 2.0, 4.0, 8.0]
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


def test_download_http_404_raises_with_status(server, tmp_path):
    dest = tmp_path / "dl" / "missing.tar.gz"
    with pytest.raises(UserError, match="404") as info:
        download(f"{server}/missing.tar.gz", dest, timeout=5)
    assert "synthetic" in str(info.value)
    assert not dest.exists()
    assert _leftovers(dest.parent) == []


class _TruncatingHandler(http.server.BaseHTTPRequestHandler):
    """Promises more bytes than it sends, then hangs up (a dropped connection mid-transfer)."""

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        self.send_response(200)
        if self.path == "/chunked":
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"a\r\n0123456789\r\n")  # no terminating 0-length chunk
        else:
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
        self.wfile.flush()
        self.close_connection = True


@pytest.fixture
def truncating_server():
    yield from _serve(_TruncatingHandler)


def test_download_dropped_connection_raises_and_keeps_only_the_part(truncating_server, tmp_path):
    dest = tmp_path / "dl" / "file"
    with pytest.raises(UserError, match="closed after 10 of 1000 bytes"):
        download(f"{truncating_server}/plain", dest, timeout=5)
    assert not dest.exists()
    assert _leftovers(dest.parent) == ["file.part"]


def test_download_cut_chunked_response_raises_user_error(truncating_server, tmp_path):
    dest = tmp_path / "dl" / "file"
    with pytest.raises(UserError, match="IncompleteRead"):
        download(f"{truncating_server}/chunked", dest, timeout=5)
    assert not dest.exists()


# --- extract ------------------------------------------------------------------------------------


def _tar_with(path: Path, members: list[tuple[str, bytes | None, str | None]]) -> Path:
    """Write a .tar.gz of (name, data, symlink target) members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, data, target in members:
            info = tarfile.TarInfo(name)
            if target is not None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


UNSAFE = [("../evil.txt", b"evil", None), ("sub/../../evil.txt", b"evil", None), ("link", None, "../../evil.txt")]
UNSAFE_IDS = ["dotdot", "nested-dotdot", "symlink-out"]


@pytest.mark.parametrize("member", UNSAFE, ids=UNSAFE_IDS)
def test_extract_refuses_members_leaving_dest(tmp_path, member):
    tarball = _tar_with(tmp_path / "evil.tar.gz", [member])
    box = tmp_path / "box"
    dest = box / "dest"
    dest.mkdir(parents=True)
    before = _files(tmp_path)
    with pytest.raises(UserError, match="evil.tar.gz"):
        extract(tarball, dest)
    assert not (box / "evil.txt").exists()
    assert not (tmp_path / "evil.txt").exists()
    outside = {k: v for k, v in _files(tmp_path).items() if not k.startswith("box/dest/")}
    assert outside == before


def test_extract_safe_tarball(tmp_path):
    tarball = _tar_with(tmp_path / "ok.tar.gz", [("a/b.txt", b"hello", None)])
    extract(tarball, tmp_path / "dest")
    assert _files(tmp_path / "dest") == {"a/b.txt": b"hello"}


def test_extract_corrupt_tarball_raises_user_error(tmp_path):
    tarball = tmp_path / "broken.tar.gz"
    tarball.write_bytes(b"\x1f\x8b" + b"definitely not gzip data" * 10)
    with pytest.raises(UserError, match="broken.tar.gz"):
        extract(tarball, tmp_path / "dest")


# --- the download stage, in process -------------------------------------------------------------


def _run(tmp_path: Path, **data) -> tuple[int, Path, Path]:
    """Run the stage on a download-inputs file holding ``data``; return (exit code, --out, --downloads)."""
    inputs = tmp_path / "download.json"
    inputs.write_text(json.dumps(data))
    out, downloads = tmp_path / "data" / "raw", tmp_path / "data" / "downloads"
    argv = ["--inputs", str(inputs), "--downloads", str(downloads), "--out", str(out)]
    return run_stage(stages.download.main, argv), out, downloads


def test_download_stage_without_network_fails_with_one_line(closed_port, tmp_path, capsys):
    code, out, downloads = _run(tmp_path, source="oxford-iiit-pet", url=f"http://127.0.0.1:{closed_port}/data")
    err = capsys.readouterr().err
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err, err
    assert "synthetic" in err and "5 attempts" in err
    assert not out.exists()
    assert _leftovers(out.parent) == ["downloads"]
    assert _leftovers(downloads) == []


def test_download_stage_synthetic_writes_the_two_archives(tmp_path, capsys):
    code, out, _ = _run(tmp_path, source="synthetic", synthetic_images=6, synthetic_seed=1)
    assert code == 0
    assert "generated 6 synthetic pets" in capsys.readouterr().out
    reference = tmp_path / "reference"
    make_synthetic(reference, 6, seed=1)
    _assert_packed(out, reference)
    assert _leftovers(out.parent) == ["raw"]  # a synthetic source downloads nothing


def test_download_stage_rejects_too_few_synthetic_images(tmp_path, capsys):
    code, out, _ = _run(tmp_path, source="synthetic", synthetic_images=2, synthetic_seed=0)
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "synthetic_images" in err
    assert not out.exists()


def _flipped_gzip(path: Path) -> Path:
    """A tarball at ``path`` of 50 kB of incompressible bytes, with one byte flipped mid-way through its
    gzip stream. Incompressible bytes are stored as they are: only gzip's CRC, read at the end, sees it."""
    payload = np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes()
    tarball = _tar_with(path, [("images/x.bin", payload, None)])
    tarball.write_bytes(_corrupt(tarball.read_bytes(), "flipped-byte"))
    return tarball


def test_extract_detects_bytes_corrupted_inside_the_gzip_stream(tmp_path):
    with pytest.raises(UserError, match="a.tar.gz"):
        extract(_flipped_gzip(tmp_path / "a.tar.gz"), tmp_path / "out")


# --- unsafe, corrupt or incomplete archives: refused at download time ----------------------------


def _mirror(tmp_path: Path, tarballs: Path, images: bytes | None = None, annotations: bytes | None = None) -> Path:
    """A folder holding the good tarballs, or the given bytes in their place."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    for name, data in (("images.tar.gz", images), ("annotations.tar.gz", annotations)):
        (folder / name).write_bytes(data if data is not None else (tarballs / name).read_bytes())
    return folder


def _unsafe_images(tmp_path: Path, member) -> bytes:
    path = _tar_with(tmp_path / "unsafe.tar.gz", [("images/a.jpg", b"jpeg", None), member])
    data = path.read_bytes()
    path.unlink()
    return data


def _corrupt(data: bytes, how: str) -> bytes:
    if how == "truncated":
        return data[: len(data) // 2]
    flipped = bytearray(data)
    flipped[len(flipped) // 2] ^= 0xFF
    return bytes(flipped)


@pytest.mark.parametrize("member", UNSAFE, ids=UNSAFE_IDS)
def test_members_refuses_what_extract_refuses(tmp_path, member):
    tarball = _tar_with(tmp_path / "evil.tar.gz", [("images/a.jpg", b"jpeg", None), member])
    with pytest.raises(UserError, match="evil.tar.gz: refused unsafe member") as info:
        members(tarball)
    assert len(str(info.value).splitlines()) == 1


def _refused_download(tarballs, tmp_path, images: bytes, match: str) -> None:
    """from_url() from a mirror whose images.tar.gz holds ``images`` (its record made to match, so the MD5
    check passes) raises one line matching ``match``, naming the download to delete (not a temporary that
    is gone), and leaves dest unfilled."""
    mirror = _mirror(tmp_path, tarballs, images=images)
    records = tuple(_record(mirror, name) for name in ("images.tar.gz", "annotations.tar.gz"))
    with pytest.raises(UserError, match=match) as info:
        from_url(mirror.as_uri(), tmp_path / "dest", tmp_path / "work", records)
    assert len(str(info.value).splitlines()) == 1
    assert str(info.value).startswith(f"{tmp_path / 'work' / 'images.tar.gz'}: ")
    assert _leftovers(tmp_path / "dest") == []


@pytest.mark.parametrize("member", UNSAFE, ids=UNSAFE_IDS)
def test_from_url_refuses_a_verified_tarball_with_an_unsafe_member(tarballs, tmp_path, member):
    _refused_download(tarballs, tmp_path, _unsafe_images(tmp_path, member), "images.tar.gz: refused unsafe member")
    assert list(tmp_path.parent.rglob("evil.txt")) == []


@pytest.mark.parametrize("how", ["truncated", "flipped-byte"])
def test_from_url_refuses_a_verified_but_corrupt_tarball(tarballs, tmp_path, how):
    images = _corrupt((tarballs / "images.tar.gz").read_bytes(), how)
    _refused_download(tarballs, tmp_path, images, "images.tar.gz: cannot read")


def test_prepare_dataset_refuses_tarballs_not_in_the_official_layout(fake_pets, tarballs, tmp_path, monkeypatch):
    no_trimaps = tmp_path / "annotations.tar.gz"
    with tarfile.open(no_trimaps, "w:gz") as tar:
        for name in ("list.txt", "trainval.txt", "test.txt"):
            tar.add(fake_pets / "annotations" / name, arcname=f"annotations/{name}")
    mirror = _mirror(tmp_path, tarballs, annotations=no_trimaps.read_bytes())
    _stand_in(monkeypatch, mirror)
    dest = tmp_path / "out" / "raw"
    with pytest.raises(UserError, match="missing annotations/trimaps/;") as info:
        prepare_dataset(str(mirror), dest)
    assert len(str(info.value).splitlines()) == 1
    assert str(info.value).startswith(f"{mirror}: the archives hold neither the official")  # the folder to fix
    assert _leftovers(dest.parent) == []


def _assert_one_line_error(capsys, *parts: str) -> str:
    """The stage's error is one line, last on stderr (after the progress bars); return it."""
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error: ") == 1, err
    line = err[err.index("error: ") :]
    assert len(line.splitlines()) == 1 and line.endswith("\n"), err
    assert all(part in line for part in parts), line
    return line


@pytest.mark.parametrize("member", UNSAFE, ids=UNSAFE_IDS)
def test_download_stage_refuses_an_unsafe_official_tarball_with_one_line(
    tarballs, tmp_path, monkeypatch, capsys, member
):
    mirror = _mirror(tmp_path, tarballs, images=_unsafe_images(tmp_path, member))
    _stand_in(monkeypatch, mirror)
    code, out, downloads = _run(tmp_path, source="oxford-iiit-pet", url=mirror.as_uri())
    assert code == 1
    _assert_one_line_error(capsys, f"{downloads / 'images.tar.gz'}: refused unsafe member")
    assert not out.exists()
    assert _leftovers(out.parent) == ["downloads"]
    assert list(tmp_path.parent.rglob("evil.txt")) == []


@pytest.mark.parametrize("how", ["truncated", "flipped-byte"])
def test_download_stage_refuses_a_corrupt_local_tarball_with_one_line(tarballs, tmp_path, monkeypatch, capsys, how):
    mirror = _mirror(tmp_path, tarballs, annotations=_corrupt((tarballs / "annotations.tar.gz").read_bytes(), how))
    _stand_in(monkeypatch, mirror)
    code, out, _ = _run(tmp_path, source=str(mirror))
    assert code == 1
    _assert_one_line_error(capsys, f"{mirror / 'annotations.tar.gz'}: cannot read", "download it again")
    assert not out.exists()
    assert _leftovers(out.parent) == []


def test_members_detects_bytes_corrupted_inside_the_gzip_stream(tmp_path):
    with pytest.raises(UserError, match="a.tar.gz: cannot read") as info:
        members(_flipped_gzip(tmp_path / "a.tar.gz"))
    assert len(str(info.value).splitlines()) == 1
