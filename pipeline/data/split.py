"""The train/valid/test split from the official list files (annotations/trainval.txt, test.txt)."""

import random
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.data.layout import image_path, trimap_path
from pipeline.data.report import DUPLICATE, GARBAGE_LINE, LISTS, MISSING_FILE, Skipped

# An official list-file line (dataset README): "<stem> <class-id> <species> <breed-id>".
LIST_LINE = re.compile(r"(\S+)\s+\d+\s+\d+\s+\d+")


@dataclass(frozen=True)
class Split:
    """Stem lists of the three splits; per list file ("trainval", "test") its number of entries
    (``listed``) and the entries left out (``skipped``)."""

    train: list[str]
    valid: list[str]
    test: list[str]
    listed: dict[str, int]
    skipped: dict[str, list[Skipped]]


def read_list(root: Path, name: str, seen: dict[str, str]) -> tuple[list[str], list[Skipped], int]:
    """Read ``annotations/<name>.txt``: its usable stems, the entries left out, and its entry count.

    An entry is a line that is neither blank nor a ``#`` comment. It is left out as
    :data:`GARBAGE_LINE` unless it is ``<stem> <class-id> <species> <breed-id>`` with integer ids,
    as :data:`DUPLICATE` if ``seen`` (stem → "<file>:<line>", updated here) already has its stem,
    and as :data:`MISSING_FILE` if its image or trimap is not a file. Raises UserError if the list
    file is missing.
    """
    list_file = Path(root) / "annotations" / f"{name}.txt"
    try:
        # Undecodable bytes become garbage lines instead of failing the whole file.
        lines = list_file.read_text(errors="replace").splitlines()
    except FileNotFoundError:
        raise UserError(f"{list_file}: list file not found; rerun the download stage") from None
    stems, skipped, listed = [], [], 0
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.startswith("#"):
            continue
        listed += 1
        where = f"{list_file}:{number}"
        match = LIST_LINE.fullmatch(line.strip())
        if match is None:
            detail = f"{where}: {line.strip()[:80]!r} is not '<stem> <class-id> <species> <breed-id>'; fix or delete it"
            skipped.append(Skipped(f"{name}.txt:{number}", GARBAGE_LINE, detail))
            continue
        stem = match[1]
        if stem in seen:
            detail = f"{where}: {stem} is already listed at {seen[stem]}; delete one of the lines"
            skipped.append(Skipped(stem, DUPLICATE, detail))
            continue
        seen[stem] = where
        missing = [p for p in (image_path(root, stem), trimap_path(root, stem)) if not p.is_file()]
        if missing:
            detail = f"{missing[0]}: file not found; restore it or delete line {number} of {list_file}"
            skipped.append(Skipped(stem, MISSING_FILE, detail))
            continue
        stems.append(stem)
    return stems, skipped, listed


def make_split(root: Path, valid_fraction: float, seed: int) -> Split:
    """Split official trainval.txt into train/valid and take test.txt as test.

    The valid set is ``round(valid_fraction * len(trainval))`` stems drawn with ``random.Random(seed)``
    from the sorted usable trainval stems, so the split depends only on the stems, the fraction and
    the seed. Entries are left out as :func:`read_list` says; a stem in both files is kept in
    trainval only, so no pair is trained and tested on. Raises UserError if a list file is missing
    or a split would be empty.
    """
    root = Path(root)
    lists, listed, skipped, seen = {}, {}, {}, {}
    for name in LISTS:
        stems, skipped[name], listed[name] = read_list(root, name, seen)
        lists[name] = sorted(stems)
    trainval = lists["trainval"]
    n_valid = round(valid_fraction * len(trainval))
    valid = sorted(random.Random(seed).sample(trainval, n_valid))
    chosen = set(valid)
    split = Split([s for s in trainval if s not in chosen], valid, lists["test"], listed, skipped)
    for name in ("train", "valid", "test"):
        if not getattr(split, name):
            raise UserError(
                f"{root}: the {name} split is empty ({len(trainval)} trainval, {len(lists['test'])} test "
                "stems with files); check the dataset and split.valid_fraction"
            )
    return split
