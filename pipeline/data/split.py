"""The train/valid/test split: the pets' from the official list files (annotations/trainval.txt, test.txt), a
folder dataset's from its splits/ or a seeded draw."""

import random
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.data import folder
from pipeline.data.classes import is_folder_dataset
from pipeline.data.layout import image_path, trimap_path
from pipeline.data.report import DUPLICATE, GARBAGE_LINE, LISTS, MISSING_FILE, SPLITS, Skipped

# An official list-file line (dataset README): "<stem> <class-id> <species> <breed-id>".
LIST_LINE = re.compile(r"(\S+)\s+\d+\s+\d+\s+\d+")


def held_out(count: int, fraction: float) -> int:
    """How many of ``count`` stems a split holds out for ``fraction`` of them: ``round(fraction * count)``
    (Python's round, half to even), the one rule for valid (of trainval) and for a folder's test share."""
    return round(fraction * count)


@dataclass(frozen=True)
class Split:
    """Stem lists of the three splits; per list file (the pets' "trainval" and "test"; a folder dataset's
    "train", "valid", "test" from splits/, or "masks") its number of entries (``listed``) and the entries
    left out (``skipped``)."""

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
    n_valid = held_out(len(trainval), valid_fraction)
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


def _listed(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]


def split_files(root: Path) -> dict[str, Path] | None:
    """A folder dataset's given split: split name ("train", "valid", "test") → its file in splits/, or None
    without splits/ (a seeded split). ``val.txt``, the common name, serves as ``valid.txt``.

    Raises UserError, in one line naming the files expected and the ones found, if splits/ exists without
    all three (a partial or misnamed set would otherwise be taken for no split at all), or holds both
    ``val.txt`` and ``valid.txt``.
    """
    splits_dir = Path(root) / "splits"
    if not splits_dir.is_dir():
        return None
    found = sorted(path.name for path in splits_dir.iterdir())
    if "val.txt" in found and "valid.txt" in found:
        raise UserError(f"{splits_dir}: both val.txt and valid.txt; keep one of them as the valid split")
    files = {"train": "train.txt", "valid": "val.txt" if "val.txt" in found else "valid.txt", "test": "test.txt"}
    if not set(files.values()) <= set(found):
        raise UserError(
            f"{splits_dir}: expected train.txt, valid.txt (or val.txt) and test.txt, found "
            f"{', '.join(found) or 'nothing'}; add the missing ones or delete splits/ for a seeded split"
        )
    return {name: splits_dir / file for name, file in files.items()}


def _usable(
    root: Path, files: dict[str, Path] | None, lists: dict[str, list[str]]
) -> tuple[dict[str, list[str]], dict[str, list[Skipped]]]:
    """Each list's stems with both files, and the entries left out (DUPLICATE, MISSING_FILE)."""
    skipped: dict[str, list[Skipped]] = {name: [] for name in lists}
    usable: dict[str, list[str]] = {}
    seen: set[str] = set()
    for name, stems in lists.items():
        usable[name] = []
        for stem in stems:
            if stem in seen:
                detail = f"{files[name]}: {stem} is listed twice; delete one"
                skipped[name].append(Skipped(stem, DUPLICATE, detail))
                continue
            seen.add(stem)
            missing = [p for p in (folder.image_path(root, stem), folder.mask_path(root, stem)) if not p.is_file()]
            if missing:
                detail = f"{missing[0]}: file not found; add it or drop {stem}"
                skipped[name].append(Skipped(stem, MISSING_FILE, detail))
                continue
            usable[name].append(stem)
    return usable, skipped


def folder_split(root: Path, valid_fraction: float, test_fraction: float, seed: int) -> Split:
    """The :class:`Split` of a folder dataset (pipeline/data/folder.py's layout).

    With splits/ (:func:`split_files`), its three lists (one stem a line); a stem listed twice is left out
    as :data:`DUPLICATE` after its first entry. Without it, every stem of masks/ is one list, "masks",
    drawn with ``random.Random(seed)`` from its sorted stems: ``round(test_fraction * N)`` to test, then
    ``round(valid_fraction * rest)`` to valid. A stem whose photo or mask is missing is left out as
    :data:`MISSING_FILE`. Raises UserError if splits/ is incomplete (:func:`split_files`), a stem has two
    photos or masks (:func:`pipeline.data.folder.image_path`), or a split would be empty.
    """
    root = Path(root)
    files = split_files(root)
    if files is None:
        lists = {"masks": folder.mask_stems(root)}
    else:
        lists = {name: _listed(path) for name, path in files.items()}
    listed = {name: len(stems) for name, stems in lists.items()}
    usable, skipped = _usable(root, files, lists)
    if files is not None:
        split = usable
    else:
        stems = usable["masks"]
        shuffled = stems[:]
        random.Random(seed).shuffle(shuffled)
        n_test = held_out(len(stems), test_fraction)
        test, rest = sorted(shuffled[:n_test]), shuffled[n_test:]
        n_valid = held_out(len(rest), valid_fraction)
        split = {"train": sorted(rest[n_valid:]), "valid": sorted(rest[:n_valid]), "test": test}
    for name in SPLITS:
        if not split[name]:
            raise UserError(
                f"{root}: the {name} split is empty ({sum(len(v) for v in split.values())} usable stems); "
                "check the folder, splits/ or split.valid_fraction and split.test_fraction"
            )
    return Split(split["train"], split["valid"], split["test"], listed, skipped)


def split_dataset(root: Path, valid_fraction: float, test_fraction: float, seed: int) -> Split:
    """:func:`folder_split` for a folder dataset (it holds classes.yaml), else :func:`make_split` (the pets;
    ``test_fraction`` unused: the official test.txt is the test split)."""
    if is_folder_dataset(root):
        folder.check_folder(root)
        return folder_split(root, valid_fraction, test_fraction, seed)
    return make_split(root, valid_fraction, seed)
