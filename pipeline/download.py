"""Put Oxford-IIIT Pet in the official layout: from the official tarballs, a local copy, or synthetic."""

import hashlib
import http.client
import shutil
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from pipeline.errors import UserError
from pipeline.io import atomic_path
from pipeline.layout import check_layout
from pipeline.synthetic import make_synthetic

OFFICIAL_URL = "https://www.robots.ox.ac.uk/~vgg/data/pets/data"
CHUNK = 1 << 20  # bytes per read


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


def download(url: str, dest: Path, expected_size: int | None = None, timeout: float = 60.0) -> None:
    """Fetch ``url`` (HTTP(S) following redirects, or file://) to ``dest`` with a tqdm progress bar.

    ``dest`` appears only once the transfer is complete. Raises UserError when the server cannot be
    reached or answers with an error, naming the other data sources.
    """
    try:
        request = urllib.request.Request(url, headers={"User-Agent": "petseg"})
        with urllib.request.urlopen(request, timeout=timeout) as response, atomic_path(dest) as tmp:
            announced = int(response.headers.get("Content-Length") or 0)
            received = 0
            with (
                open(tmp, "wb") as f,
                tqdm(total=announced or expected_size, unit="B", unit_scale=True, desc=Path(dest).name) as bar,
            ):
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
            if announced and received != announced:
                raise UserError(
                    f"cannot download {url}: connection closed after {received} of {announced} bytes; retry"
                )
    except urllib.error.HTTPError as err:
        raise UserError(f"cannot download {url}: HTTP {err.code} {err.reason}; {OTHER_SOURCES}") from None
    except UserError:
        raise
    except ValueError as err:
        raise UserError(f"data.url: cannot download {url} ({err}); give an http(s):// or file:// URL") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        reason = getattr(err, "reason", err)
        raise UserError(f"cannot download {url} ({reason}): no network?; {OTHER_SOURCES}") from None


def verify(path: Path, archive: Archive) -> None:
    """Raise UserError unless the file's MD5 is ``archive.md5``."""
    got = md5sum(path)
    if got != archive.md5:
        raise UserError(
            f"{path}: MD5 {got} does not match the official {archive.md5} (truncated or altered file); "
            "delete it and download it again"
        )


def extract(tarball: Path, dest: Path) -> None:
    """Extract a .tar.gz into ``dest`` with tarfile's "data" filter (PEP 706).

    The filter refuses absolute paths, ``..`` components, links leaving ``dest`` and device files,
    so a hostile archive cannot write outside ``dest``. Raises UserError on such a member or a
    corrupt archive.
    """
    try:
        with tarfile.open(tarball, "r:gz") as tar:
            tar.extractall(dest, filter="data")
            # tarfile stops at the end-of-archive marker; read on so gzip checks its CRC and length.
            while tar.fileobj.read(CHUNK):
                pass
    except tarfile.FilterError as err:
        raise UserError(f"{tarball}: refused unsafe member ({err}); the archive is not the official one") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as err:
        raise UserError(f"{tarball}: cannot extract ({err}); delete it and download it again") from None


def from_tarballs(folder: Path, dest: Path, archives: tuple[Archive, ...] = OFFICIAL_ARCHIVES) -> None:
    """Verify and extract the tarballs found in ``folder`` into ``dest``; check the layout."""
    for archive in archives:
        path = Path(folder) / archive.name
        if not path.is_file():
            raise UserError(f"{path}: not found; put both {' and '.join(a.name for a in archives)} there")
        verify(path, archive)
        extract(path, dest)
    check_layout(dest)


def from_url(base_url: str, dest: Path, workdir: Path, archives: tuple[Archive, ...] = OFFICIAL_ARCHIVES) -> None:
    """Download each archive from ``base_url``/<name> into ``workdir``, verify and extract into ``dest``.

    Raises UserError as :func:`download`, :func:`verify` and :func:`extract` do.
    """
    for archive in archives:
        download(f"{base_url.rstrip('/')}/{archive.name}", Path(workdir) / archive.name, archive.size)
    from_tarballs(workdir, dest, archives)


def from_folder(source: Path, dest: Path) -> None:
    """Copy a dataset already in the official layout (images/ and annotations/) into ``dest``.

    Raises UserError if ``source`` is not in that layout.
    """
    check_layout(source)
    for sub in ("images", "annotations"):
        shutil.copytree(Path(source) / sub, Path(dest) / sub)


def prepare_dataset(
    source: str, dest: Path, url: str = OFFICIAL_URL, synthetic_images: int = 0, synthetic_seed: int = 0
) -> str:
    """Fill ``dest`` with the dataset in the official layout; ``dest`` appears only when complete.

    ``source`` is "oxford-iiit-pet" (download the official tarballs from ``url``), "synthetic"
    (:func:`pipeline.synthetic.make_synthetic` with ``synthetic_images`` and ``synthetic_seed``), or
    a local folder in the official layout or holding the two official tarballs. Returns a one-line
    description of what was done. Raises UserError for a missing folder, a bad checksum, an unsafe
    or corrupt archive, or no network.
    """
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        if source == "oxford-iiit-pet":
            work = tmp / ".downloads"
            from_url(url, tmp, work)
            shutil.rmtree(work)
            done = f"downloaded and verified the official tarballs from {url}"
        elif source == "synthetic":
            make_synthetic(tmp, synthetic_images, synthetic_seed)
            done = f"generated {synthetic_images} synthetic pets (seed {synthetic_seed})"
        else:
            folder = Path(source).expanduser()
            if not folder.is_dir():
                raise UserError(f"data.source: {folder} is not a folder; use oxford-iiit-pet, synthetic or a folder")
            if all((folder / a.name).is_file() for a in OFFICIAL_ARCHIVES):
                from_tarballs(folder, tmp)
                done = f"extracted the verified official tarballs in {folder}"
            else:
                from_folder(folder, tmp)
                done = f"copied the dataset in {folder}"
    return done
