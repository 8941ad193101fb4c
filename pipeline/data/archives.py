"""The raw dataset as DVC tracks it: the two official tarballs, not the ~15,000 files they hold.

DVC hashes, pushes, pulls and checks out every file of an output one by one, so the download stage
keeps ``images.tar.gz`` (images/) and ``annotations.tar.gz`` (annotations/) as its output, and the
split and preprocess stages extract them into a scratch folder for their run (:func:`opened`).
bench/dvc.py measured the tarballs 6-32x faster than the extracted folder for `dvc add`, `push` and
a fresh clone's `pull` on a synthetic set of the full dataset's 7,390 pairs (README, Performance).
"""

import gzip
import os
import shutil
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.data.classes import CLASSES_FILE, is_folder_dataset
from pipeline.data.folder import check_folder
from pipeline.data.layout import LIST_FILES, check_layout

# Folder of the official layout → the official archive holding it.
ARCHIVES = {"images": "images.tar.gz", "annotations": "annotations.tar.gz"}
CHUNK = 1 << 20  # bytes per read


def is_packed(raw: Path) -> bool:
    """Whether ``raw`` holds both official archives (else it is read as the extracted layout)."""
    return all((Path(raw) / name).is_file() for name in ARCHIVES.values())


@contextmanager
def _read_through(tarball: Path, verb: str) -> Iterator[tarfile.TarFile]:
    """``tarball`` open for the block, then read to its end: tarfile stops at the end-of-archive
    marker, and only reading on makes gzip check its CRC and length. Errors become one-line
    UserErrors: an unsafe member (tarfile's "data" filter), or a corrupt or missing archive."""
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            yield tar
            while tar.fileobj.read(CHUNK):
                pass
    except tarfile.FilterError as err:
        raise UserError(f"{tarball}: refused unsafe member ({err}); the archive is not the official one") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise UserError(f"{tarball}: cannot {verb} ({err}); delete it and download it again") from None


def extract(tarball: Path, dest: Path) -> None:
    """Extract a .tar.gz into ``dest`` with tarfile's "data" filter (PEP 706).

    The filter refuses absolute paths, ``..`` components, links leaving ``dest`` and device files,
    so a hostile archive cannot write outside ``dest``. Raises UserError on such a member or a
    corrupt archive.
    """
    with _read_through(tarball, "extract") as tar:
        tar.extractall(dest, filter="data")


def members(tarball: Path) -> set[str]:
    """Names of the files in a .tar.gz, read through to its end (so gzip checks its CRC), each member
    checked by the "data" filter as :func:`extract` would. Raises UserError as :func:`extract`."""
    names = set()
    with _read_through(tarball, "read") as tar:
        for member in tar:
            tarfile.data_filter(member, "/petseg-check")  # raises on what extract would refuse
            if member.isfile():
                names.add(member.name)
    return names


def check_archives(raw: Path) -> None:
    """Raise UserError unless ``raw``'s two archives are readable, safe to extract, and hold images/ and
    either annotations/trimaps/ and the three list files (the official layout) or masks/ and classes.yaml
    (a folder dataset)."""
    raw = Path(raw)
    images = members(raw / ARCHIVES["images"])
    annotations = members(raw / ARCHIVES["annotations"])
    if CLASSES_FILE in annotations:
        missing = [] if any(name.startswith("masks/") for name in annotations) else ["masks/"]
    else:
        missing = [f"annotations/{name}" for name in LIST_FILES if f"annotations/{name}" not in annotations]
        if not any(name.startswith("annotations/trimaps/") for name in annotations):
            missing.append("annotations/trimaps/")
    if not any(name.startswith("images/") for name in images):
        missing.insert(0, "images/")
    if missing:
        raise UserError(
            f"{raw}: the archives hold neither the official Oxford-IIIT Pet layout nor a folder dataset, missing "
            f"{', '.join(missing)}; point data.source at the official tarballs or a dataset folder (docs/data.md)"
        )


def check_dataset(root: Path) -> None:
    """Raise UserError unless ``root`` is a folder dataset (it holds classes.yaml: :func:`check_folder`) or
    in the official layout (:func:`check_layout`)."""
    if is_folder_dataset(root):
        check_folder(root)
    else:
        check_layout(root)


def pack(folder: Path, subs: Sequence[str], tarball: Path) -> None:
    """Write ``folder``'s files or sub-folders ``subs`` as the .tar.gz ``tarball`` with members ``<sub>...``,
    reproducibly: sorted names, no times, owners or file modes from the disk, gzip level 1 (the photos are
    JPEGs already compressed), so the same folder always gives the same bytes (and DVC the same hash).

    Symbolic links are followed, as copying the folder would (``images`` may be a link to another
    disk): a link stored as a link member would point outside the folder, which extraction refuses.
    """
    found = []
    for sub in subs:
        top = Path(folder) / sub
        found.append(top)
        if top.is_file():
            continue
        found += [
            Path(parent) / name
            for parent, dirs, files in os.walk(top, onerror=_raise, followlinks=True)
            for name in dirs + files
        ]
    with open(tarball, "wb") as file, gzip.GzipFile("", "wb", 1, file, mtime=0) as gz:
        # dereference: a member holds what a link points at, and no file becomes a hard-link member.
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT, dereference=True) as tar:
            for path in sorted(found):
                info = tar.gettarinfo(path, arcname=path.relative_to(folder).as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                info.mode = 0o755 if info.isdir() else 0o644
                if info.isfile():
                    with open(path, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)


def _raise(err: OSError) -> None:
    raise err  # os.walk would skip a folder it cannot list; the archive would silently lack it


def place(source: Path, dest: Path) -> None:
    """Put the file ``source`` at ``dest``: a hard link when both are on one file system (no copy of
    800 MB, and ``source`` is never written to again), else a copy."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


@contextmanager
def opened(raw: Path) -> Iterator[Path]:
    """The dataset of ``raw`` in the official layout, for the block: ``raw`` itself if it holds the
    extracted folders, else its two archives extracted into ``.<raw name>-extracted`` beside it,
    which is removed after the block (and at the start, if a killed run left it). Its name is fixed,
    not random, so the paths in skip reasons (metrics/data.json) are the same from run to run.
    Raises UserError as :func:`extract` and :func:`check_dataset`.
    """
    raw = Path(raw)
    if not is_packed(raw):
        yield raw
        return
    scratch = raw.with_name(f".{raw.name}-extracted")
    shutil.rmtree(scratch, ignore_errors=True)
    try:
        for name in ARCHIVES.values():
            extract(raw / name, scratch)
        check_dataset(scratch)
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
