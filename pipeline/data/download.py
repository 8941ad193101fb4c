"""Oxford-IIIT Pet as its two official tarballs: downloaded, from a local folder, or synthetic."""

import hashlib
import http.client
import os
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.core.errors import UserError, first_line
from pipeline.core.io import atomic_path
from pipeline.core.messages import hide_bar
from pipeline.data.archives import ARCHIVES, check_archives, pack, place
from pipeline.data.classes import is_folder_dataset
from pipeline.data.folder import ANNOTATIONS as FOLDER_ANNOTATIONS
from pipeline.data.folder import check_folder
from pipeline.data.layout import check_layout
from pipeline.data.synthetic import make_synthetic, make_synthetic_folder

OFFICIAL_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data"
CHUNK = 1 << 20  # bytes per read
# Five tries with 1, 2, 4 and 8 s between them: ~15 s of waiting rides out a dropped Wi-Fi link or a
# server restart, yet someone offline gets the error within a quarter of a minute. A transfer cut
# mid-way loses nothing (the next try resumes it), so more tries would buy little.
ATTEMPTS = 5
BACKOFF = 1.0  # seconds before the second try; doubled before each later one


@dataclass(frozen=True)
class Archive:
    """An official tarball: file name, MD5 hex digest and size in bytes."""

    name: str
    md5: str
    size: int


# MD5s and sizes of the official release (https://www.robots.ox.ac.uk/~vgg/data/pets/).
OFFICIAL_ARCHIVES = (
    Archive("images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c", 791_918_971),
    Archive("annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f", 19_173_078),
)
OTHER_SOURCES = (
    "set data.source in params.yaml to a local folder (the official layout, or one holding "
    "images.tar.gz and annotations.tar.gz) or to 'synthetic'"
)


def md5sum(path: Path) -> str:
    """MD5 hex digest of a file, read in 1 MiB chunks. Raises OSError if it cannot be read."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: Path,
    expected_size: int | None = None,
    *,
    timeout: float = 60.0,
    attempts: int = ATTEMPTS,
    backoff: float = BACKOFF,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Fetch ``url`` (HTTP(S) following redirects, or file://) to ``dest`` with a tqdm progress bar.

    Bytes go to ``<dest>.part``; a part left by an earlier attempt or run is resumed with a
    ``Range: bytes=<its size>-`` request (a server answering 200 instead of 206 restarts it from
    zero, one answering 416 has it deleted and fetched afresh). ``dest`` appears, by a rename, only
    once the part holds the whole announced length. Connection errors, timeouts (``timeout``
    seconds per socket operation), cut transfers and HTTP 5xx are retried, ``attempts`` (>= 1) tries
    in all, calling ``sleep(backoff * 2**k)`` (seconds) before try k + 2. ``expected_size`` (bytes)
    sizes the progress bar when the server announces no length. The part is kept on failure so
    that the next run resumes it.

    Raises UserError (one line) when every try fails, naming the URL and the number of tries; at
    once on an HTTP 4xx, naming the other data sources; or for a URL urllib cannot open.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    part.parent.mkdir(parents=True, exist_ok=True)
    for k in range(attempts):
        if k:
            sleep(backoff * 2 ** (k - 1))
        try:
            _fetch(url, part, expected_size, timeout)
            os.replace(part, dest)
            return
        except urllib.error.HTTPError as err:
            err.close()
            if err.code < 500:  # the request itself is wrong: asking again would get the same answer
                raise UserError(f"cannot download {url}: HTTP {err.code} {err.reason}; {OTHER_SOURCES}") from None
            reason = f"HTTP {err.code} {err.reason}"
        except (ValueError, http.client.InvalidURL) as err:
            raise UserError(
                f"data.url: cannot download {url} ({first_line(err)}); give an http(s):// or file:// URL"
            ) from None
        except (OSError, http.client.HTTPException) as err:  # URLError, ConnectionError, TimeoutError, cut reads
            reason = " ".join(str(getattr(err, "reason", err)).split()) or type(err).__name__
    raise UserError(
        f"cannot download {url}: {reason} on each of {attempts} attempts; check the network and run again "
        f"(it resumes from {part}), or {OTHER_SOURCES}"
    )


def _fetch(url: str, part: Path, expected_size: int | None, timeout: float) -> None:
    """One GET of ``url`` into ``part``, resuming it if it exists; raise ConnectionError if cut short."""
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "petseg"} | ({"Range": f"bytes={offset}-"} if offset else {})
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code != 416 or not offset:
            raise
        # The part is as long as the file or longer (the file changed on the server): start again.
        err.close()
        part.unlink()
        return _fetch(url, part, expected_size, timeout)
    with response:
        if response.status != 206:  # 200: the server ignored the Range (file:// always does)
            offset = 0
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        with (
            open(part, "ab" if offset else "wb") as f,
            tqdm(
                total=total or expected_size,
                initial=offset,
                unit="B",
                unit_scale=True,
                desc=part.stem,
                disable=hide_bar(True),
            ) as bar,
        ):
            # read1 returns what has arrived, so bytes received before a timeout reach the part.
            while chunk := response.read1(CHUNK):
                f.write(chunk)
                bar.update(len(chunk))
            size = f.tell()
    # http.client returns b"" rather than raising when a Content-Length body is cut short.
    if total is not None and size != total:
        raise ConnectionError(f"connection closed after {size} of {total} bytes")


def verify(path: Path, archive: Archive) -> None:
    """Raise UserError unless the file's MD5 is ``archive.md5``."""
    got = md5sum(path)
    if got != archive.md5:
        raise UserError(
            f"{path}: MD5 {got} does not match the official {archive.md5} (truncated or altered file); "
            "delete it and download it again"
        )


def from_tarballs(folder: Path, dest: Path, archives: tuple[Archive, ...] = OFFICIAL_ARCHIVES) -> None:
    """Verify the tarballs found in ``folder``, check their contents (:func:`~pipeline.data.archives.check_archives`,
    so that an error names the file in ``folder``), and copy them into ``dest``."""
    for archive in archives:
        path = Path(folder) / archive.name
        if not path.is_file():
            raise UserError(f"{path}: not found; put both {' and '.join(a.name for a in archives)} there")
        verify(path, archive)
    check_archives(folder)
    Path(dest).mkdir(parents=True, exist_ok=True)
    for archive in archives:
        # Copied, not linked: DVC makes the files it tracks read-only, which a link would do to the
        # user's own files too (and an edit of theirs would change the tracked data).
        shutil.copyfile(Path(folder) / archive.name, Path(dest) / archive.name)


def from_url(base_url: str, dest: Path, workdir: Path, archives: tuple[Archive, ...] = OFFICIAL_ARCHIVES) -> None:
    """Fill ``dest`` with the archives at ``base_url``/<name>, kept in ``workdir`` for later runs.

    An archive already in ``workdir`` with the right MD5 is used without any request; one with a
    wrong MD5 (truncated, altered, another release) is deleted and fetched again. Each download is
    verified, and their contents checked in ``workdir`` (so that an error names the file to delete),
    before they are put in ``dest`` (:func:`~pipeline.data.archives.place`). Raises UserError as
    :func:`download`, :func:`verify` and :func:`~pipeline.data.archives.check_archives` do.
    """
    paths = [Path(workdir) / archive.name for archive in archives]
    for archive, path in zip(archives, paths, strict=True):
        if path.is_file() and md5sum(path) != archive.md5:
            path.unlink()
        if not path.is_file():
            download(f"{base_url.rstrip('/')}/{archive.name}", path, archive.size)
            verify(path, archive)
    check_archives(workdir)
    Path(dest).mkdir(parents=True, exist_ok=True)
    for path in paths:
        place(path, Path(dest) / path.name)


def from_folder(source: Path, dest: Path) -> None:
    """Pack a dataset as the two archives in ``dest`` (:func:`~pipeline.data.archives.pack`): the official
    layout (images/ and annotations/), or a folder dataset (images/; masks/, classes.yaml and splits/ if
    present, in annotations.tar.gz). Raises UserError if ``source`` is in neither layout."""
    source, dest = Path(source), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if is_folder_dataset(source):
        check_folder(source)
        pack(source, ["images"], dest / ARCHIVES["images"])
        pack(source, [name for name in FOLDER_ANNOTATIONS if (source / name).exists()], dest / ARCHIVES["annotations"])
        return
    check_layout(source)
    for sub, name in ARCHIVES.items():
        pack(source, [sub], dest / name)


def prepare_dataset(
    source: str,
    dest: Path,
    url: str = OFFICIAL_URL,
    synthetic_images: int = 0,
    synthetic_seed: int = 0,
    synthetic_classes: int = 0,
    downloads: Path | None = None,
) -> str:
    """Fill ``dest`` with the dataset as the two official archives, images.tar.gz and annotations.tar.gz
    (what DVC tracks: see :mod:`pipeline.data.archives`); ``dest`` appears only when complete.

    ``source`` is "oxford-iiit-pet" (the official tarballs from ``url``, see below), "synthetic"
    (:func:`pipeline.data.synthetic.make_synthetic` with ``synthetic_images`` and ``synthetic_seed``, or
    with ``synthetic_classes`` >= 2 :func:`~pipeline.data.synthetic.make_synthetic_folder`), or a local
    folder: in the official layout or a folder dataset (packed), or holding the two official tarballs.
    Returns a one-line description of what was done. Raises UserError for a missing folder, a bad checksum, an unsafe
    or corrupt archive, or no network.

    The official tarballs (~800 MB) are fetched into ``downloads``, by default ``downloads`` beside
    ``dest`` (data/downloads for data/raw, like dvc.yaml's paths.downloads); it is created if
    missing and never emptied. It lies outside ``dest`` so that a failed run keeps its ``.part``
    files for the next run to resume, and a later run (another data.* setting, a deleted ``dest``)
    reuses the verified tarballs without a request.
    """
    dest = Path(dest)
    downloads = Path(downloads or dest.parent / "downloads")
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        if source == "oxford-iiit-pet":
            # OFFICIAL_ARCHIVES looked up now, not bound as a default, so tests can stand in small ones.
            from_url(url, tmp, downloads, OFFICIAL_ARCHIVES)
            return f"the verified official tarballs from {url} (kept in {downloads})"
        if source == "synthetic":
            return _synthetic(tmp, synthetic_images, synthetic_seed, synthetic_classes)
        return _local(Path(source).expanduser(), tmp)


def _synthetic(dest: Path, images: int, seed: int, classes: int) -> str:
    """Generate ``images`` synthetic pets (``classes`` 0) or pictures of ``classes`` classes with
    ``seed``, packed as the two archives in ``dest``; what was done, in a line."""
    if classes:
        make_synthetic_folder(dest / "synthetic", images, seed, classes)
        what = f"pictures of {classes} classes"
    else:
        make_synthetic(dest / "synthetic", images, seed)
        what = "pets"
    from_folder(dest / "synthetic", dest)
    shutil.rmtree(dest / "synthetic")
    return f"generated {images} synthetic {what} (seed {seed}), packed as the two archives"


def _local(folder: Path, dest: Path) -> str:
    """The two archives of the local ``folder`` in ``dest``: its official tarballs, verified, or its
    dataset packed; what was done, in a line. Raises UserError if ``folder`` is not a folder."""
    if not folder.is_dir():
        raise UserError(f"data.source: {folder} is not a folder; use oxford-iiit-pet, synthetic or a folder")
    if all((folder / a.name).is_file() for a in OFFICIAL_ARCHIVES):
        from_tarballs(folder, dest, OFFICIAL_ARCHIVES)
        return f"the verified official tarballs in {folder}"
    from_folder(folder, dest)
    return f"packed the dataset in {folder} as the two archives"
