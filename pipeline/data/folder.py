"""A folder of the user's own images and label masks: where its files are.

The layout (docs/data.md)::

    images/<stem>.<photo suffix>  the photos: .jpg .jpeg .png .tif .tiff .bmp .webp, in any letter case
    masks/<stem>.<mask suffix>    a class index per pixel (.png .tif .tiff, any case), the photo's size
    classes.yaml                  the classes (pipeline.data.classes)
    splits/                       optional: train.txt, valid.txt (or val.txt), test.txt (pipeline.data.split)

The folder is packed as the two archives DVC tracks, like the pets (images.tar.gz holds images/,
annotations.tar.gz the rest), and extracted again for the split and preprocess stages.
"""

import os
import time
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.data.classes import CLASSES_FILE

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
# Lossless formats only: a JPEG's or lossy WebP's artefacts would invent class indices at the edges.
MASK_SUFFIXES = (".png", ".tif", ".tiff")
ANNOTATIONS = ("masks", CLASSES_FILE, "splits")  # what annotations.tar.gz holds, when present

# File systems stamp a folder's mtime from a coarse clock (a few ms on Linux), so a folder changed less
# than this long before it was listed may change again under the same mtime: such a listing is not kept.
SETTLED_NS = 1_000_000_000
_listings: dict[str, tuple[tuple[int, int, int], dict[str, tuple[str, ...]]]] = {}


def _listing(directory: Path) -> dict[str, tuple[str, ...]]:
    """The files of ``directory`` by stem: stem → its file names (``a.jpg`` and ``a.PNG`` under ``a``), sorted;
    {} if ``directory`` does not exist.

    A folder is listed once and the listing reused while the folder's device, inode and mtime (ns) stay
    the same (as importlib caches a folder of modules), so looking up each of N stems costs one listing,
    not N globs; each process (the decode workers too) keeps its own.
    """
    try:
        stat = os.stat(directory)
    except FileNotFoundError:
        return {}
    key = (stat.st_dev, stat.st_ino, stat.st_mtime_ns)
    cached = _listings.get(str(directory))
    if cached is not None and cached[0] == key:
        return cached[1]
    names: dict[str, list[str]] = {}
    with os.scandir(directory) as entries:
        for entry in entries:
            stem, _ = os.path.splitext(entry.name)
            if stem != entry.name and entry.is_file():
                names.setdefault(stem, []).append(entry.name)
    found = {stem: tuple(sorted(files)) for stem, files in names.items()}
    if time.time_ns() - stat.st_mtime_ns > SETTLED_NS:
        _listings[str(directory)] = (key, found)
    return found


def _find(directory: Path, stem: str, suffixes: tuple[str, ...], kind: str) -> Path:
    found = [name for name in _listing(directory).get(stem, ()) if os.path.splitext(name)[1].lower() in suffixes]
    if len(found) > 1:
        raise UserError(f"{directory}: {stem} has {len(found)} {kind}s ({', '.join(found)}); keep one file per stem")
    return directory / (found[0] if found else f"{stem}{suffixes[0]}")


def image_path(root: Path, stem: str) -> Path:
    """The photo of ``stem``: the file images/<stem><suffix> with a suffix of :data:`IMAGE_SUFFIXES` in any
    letter case (``IMG_1.JPG``); the stem itself is matched exactly. Without one, images/<stem>.jpg (which
    does not exist: opening it reports the photo missing). Raises UserError, naming the files, if the stem
    has two or more photos (``a.jpg`` and ``a.png``): which one is meant cannot be told."""
    return _find(Path(root) / "images", stem, IMAGE_SUFFIXES, "photo")


def mask_path(root: Path, stem: str) -> Path:
    """The label mask of ``stem``: masks/<stem><suffix> with a suffix of :data:`MASK_SUFFIXES` in any letter
    case, else masks/<stem>.png (missing). Raises UserError, naming the files, if the stem has two or more."""
    return _find(Path(root) / "masks", stem, MASK_SUFFIXES, "mask")


def mask_stems(root: Path) -> list[str]:
    """The stems of masks/ (those with a file of a :data:`MASK_SUFFIXES` suffix, any case), sorted."""
    return sorted(
        stem
        for stem, names in _listing(Path(root) / "masks").items()
        if any(os.path.splitext(name)[1].lower() in MASK_SUFFIXES for name in names)
    )


def check_folder(root: Path) -> None:
    """Raise UserError unless ``root`` holds images/, masks/ and classes.yaml."""
    root = Path(root)
    missing = [name for name in ("images", "masks", CLASSES_FILE) if not (root / name).exists()]
    if missing:
        raise UserError(
            f"{root}: a folder dataset needs images/, masks/ and {CLASSES_FILE}, missing {', '.join(missing)}; "
            "see docs/data.md"
        )
