"""A folder of the user's own images and label masks, and its split.

The layout (docs/data.md)::

    images/<stem>.jpg|png         the photos
    masks/<stem>.png              a class index per pixel (mode L or P), the photo's size
    classes.yaml                  the classes (pipeline.data.classes)
    splits/{train,valid,test}.txt optional: one stem a line; else a seeded split of every stem

The folder is packed as the two archives DVC tracks, like the pets (images.tar.gz holds images/,
annotations.tar.gz the rest), and extracted again for the split and preprocess stages.
"""

import random
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.data.classes import CLASSES_FILE
from pipeline.data.report import DUPLICATE, MISSING_FILE, Skipped

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ANNOTATIONS = ("masks", CLASSES_FILE, "splits")  # what annotations.tar.gz holds, when present
SPLIT_NAMES = ("train", "valid", "test")


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


def _listed(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]


def folder_split(
    root: Path, valid_fraction: float, test_fraction: float, seed: int
) -> tuple[dict[str, list[str]], dict[str, int], dict[str, list[Skipped]]]:
    """The train/valid/test stems of a folder dataset, the entries of each list, and those left out.

    With splits/train.txt, valid.txt and test.txt, those lists (one stem a line); a stem listed twice
    is left out as :data:`DUPLICATE` after its first entry. Without them, every stem of masks/ is one
    list, "masks", drawn with ``random.Random(seed)`` from its sorted stems: ``round(test_fraction *
    N)`` to test, then ``round(valid_fraction * rest)`` to valid. A stem whose photo or mask is missing
    is left out as :data:`MISSING_FILE`. Raises UserError if a split would be empty.
    """
    root = Path(root)
    splits_dir = root / "splits"
    given = all((splits_dir / f"{name}.txt").is_file() for name in SPLIT_NAMES)
    lists = {name: _listed(splits_dir / f"{name}.txt") for name in SPLIT_NAMES} if given else None
    if lists is None:
        lists = {"masks": sorted(p.stem for p in (root / "masks").glob("*.png"))}
    listed = {name: len(stems) for name, stems in lists.items()}
    skipped: dict[str, list[Skipped]] = {name: [] for name in lists}
    usable: dict[str, list[str]] = {}
    seen: set[str] = set()
    for name, stems in lists.items():
        usable[name] = []
        for stem in stems:
            if stem in seen:
                detail = f"{splits_dir}/{name}.txt: {stem} is listed twice; delete one"
                skipped[name].append(Skipped(stem, DUPLICATE, detail))
                continue
            seen.add(stem)
            missing = [p for p in (image_path(root, stem), mask_path(root, stem)) if not p.is_file()]
            if missing:
                detail = f"{missing[0]}: file not found; add it or drop {stem}"
                skipped[name].append(Skipped(stem, MISSING_FILE, detail))
                continue
            usable[name].append(stem)
    if given:
        split = usable
    else:
        stems = usable["masks"]
        shuffled = stems[:]
        random.Random(seed).shuffle(shuffled)
        n_test = round(test_fraction * len(stems))
        test, rest = sorted(shuffled[:n_test]), shuffled[n_test:]
        n_valid = round(valid_fraction * len(rest))
        split = {"train": sorted(rest[n_valid:]), "valid": sorted(rest[:n_valid]), "test": test}
    for name in SPLIT_NAMES:
        if not split[name]:
            raise UserError(
                f"{root}: the {name} split is empty ({sum(len(v) for v in split.values())} usable stems); "
                "check the folder, splits/ or split.valid_fraction and split.test_fraction"
            )
    return split, listed, skipped
