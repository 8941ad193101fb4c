"""The official Oxford-IIIT Pet on-disk layout.

From the dataset page (https://www.robots.ox.ac.uk/~vgg/data/pets/) and the README in
annotations.tar.gz: ``images/<stem>.jpg``, ``annotations/trimaps/<stem>.png`` and
``annotations/{list,trainval,test}.txt`` with lines ``<stem> <class-id> <species> <breed-id>``
after ``#`` header lines.
"""

from pathlib import Path

from pipeline.core.errors import UserError

LIST_FILES = ("list.txt", "trainval.txt", "test.txt")
# Pairs in the official trainval.txt and test.txt (the dataset README in annotations.tar.gz).
OFFICIAL_SIZES = {"trainval": 3680, "test": 3669}


def image_path(root: Path, stem: str) -> Path:
    """Path of the photo of ``stem`` (a JPEG by name; a few real ones are PNG or GIF inside)."""
    return Path(root) / "images" / f"{stem}.jpg"


def trimap_path(root: Path, stem: str) -> Path:
    """Path of the trimap PNG of ``stem``."""
    return Path(root) / "annotations" / "trimaps" / f"{stem}.png"


def check_layout(root: Path) -> None:
    """Raise UserError unless ``root`` holds images/, annotations/trimaps/ and the three list files."""
    root = Path(root)
    needed = [root / "images", root / "annotations" / "trimaps"] + [root / "annotations" / f for f in LIST_FILES]
    missing = [str(p.relative_to(root)) for p in needed if not p.exists()]
    if missing:
        raise UserError(
            f"{root}: not in the official Oxford-IIIT Pet layout, missing {', '.join(missing)}; "
            "point data.source at the folder holding images/ and annotations/"
        )


def read_stems(list_file: Path) -> list[str]:
    """Stems (first field) of an official list file, skipping ``#`` header lines and blank lines."""
    try:
        lines = Path(list_file).read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"{list_file}: list file not found; rerun the download stage") from None
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#")]


# annotations/list.txt, SPECIES column (dataset README): 1 = cat, 2 = dog.
SPECIES = {"1": "cat", "2": "dog"}
UNKNOWN_SPECIES = "unknown"


def read_species(list_file: Path) -> dict[str, str]:
    """Map each stem of an official list file to "cat" or "dog" (its third field, SPECIES).

    A line whose species is neither 1 nor 2, or that has fewer than three fields, is left out, so
    its stem reads as :data:`UNKNOWN_SPECIES` to callers using ``.get(stem, UNKNOWN_SPECIES)``.
    Raises UserError if the file is missing.
    """
    try:
        lines = Path(list_file).read_text().splitlines()
    except FileNotFoundError:
        raise UserError(f"{list_file}: list file not found; rerun the download stage") from None
    fields = (line.split() for line in lines if line.strip() and not line.startswith("#"))
    return {f[0]: SPECIES[f[2]] for f in fields if len(f) >= 3 and f[2] in SPECIES}


def breed_of(stem: str) -> str:
    """The breed in an official stem, ``<breed>_<number>`` (e.g. "american_bulldog_12" → "american_bulldog")."""
    breed, _, number = stem.rpartition("_")
    return breed if breed and number.isdigit() else stem
