"""The official Oxford-IIIT Pet on-disk layout.

From the dataset page (https://www.robots.ox.ac.uk/~vgg/data/pets/) and the README in
annotations.tar.gz: ``images/<stem>.jpg``, ``annotations/trimaps/<stem>.png`` and
``annotations/{list,trainval,test}.txt`` with lines ``<stem> <class-id> <species> <breed-id>``
after ``#`` header lines.
"""

from pathlib import Path

from pipeline.errors import UserError

LIST_FILES = ("list.txt", "trainval.txt", "test.txt")


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
