"""A folder of the user's own images and label masks: where its files are.

The layout (docs/data.md)::

    images/<stem>.jpg|png         the photos
    masks/<stem>.png              a class index per pixel (mode L or P), the photo's size
    classes.yaml                  the classes (pipeline.data.classes)
    splits/{train,valid,test}.txt optional: one stem a line; else a seeded split of every stem

The folder is packed as the two archives DVC tracks, like the pets (images.tar.gz holds images/,
annotations.tar.gz the rest), and extracted again for the split and preprocess stages.
"""

from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.data.classes import CLASSES_FILE

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ANNOTATIONS = ("masks", CLASSES_FILE, "splits")  # what annotations.tar.gz holds, when present


def image_path(root: Path, stem: str) -> Path:
    """The photo of ``stem``: the first of images/<stem>.jpg, .jpeg, .png that exists (the .jpg when none)."""
    for suffix in IMAGE_SUFFIXES:
        path = Path(root) / "images" / f"{stem}{suffix}"
        if path.is_file():
            return path
    return Path(root) / "images" / f"{stem}{IMAGE_SUFFIXES[0]}"


def mask_path(root: Path, stem: str) -> Path:
    """The label mask of ``stem``."""
    return Path(root) / "masks" / f"{stem}.png"


def check_folder(root: Path) -> None:
    """Raise UserError unless ``root`` holds images/, masks/ and classes.yaml."""
    root = Path(root)
    missing = [name for name in ("images", "masks", CLASSES_FILE) if not (root / name).exists()]
    if missing:
        raise UserError(
            f"{root}: a folder dataset needs images/, masks/ and {CLASSES_FILE}, missing {', '.join(missing)}; "
            "see docs/data.md"
        )
