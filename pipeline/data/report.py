"""Listed pairs left out of the data, by reason, and the report the preprocess stage writes about them.

The split stage skips list-file entries (:data:`MISSING_FILE`, :data:`DUPLICATE`,
:data:`GARBAGE_LINE`) and records them in its ``summary.json``; the preprocess stage adds the pairs
it cannot decode and writes :func:`build_report`'s dict (``metrics/data.json``, git-tracked)::

    {"total": {"listed": N, "used": U, "skipped": S, "skipped_fraction": S / N},
     "skipped_by_reason": {<reason>: count, ...},       # every reason, zeros included
     "lists": {"trainval": {"listed": n, "skipped": k}, "test": {...}},   # skipped by the split stage
     "splits": {"train": {"used": n, "skipped": k}, "valid": {...}, "test": {...}},  # by preprocess
     "skipped_stems": {<reason>: [stem, ...], ...},     # reasons with skips only
     "details": ["<file>: <what is wrong>; <the fix>", ...]}

N = U + S: an entry is a non-comment, non-blank line of trainval.txt or test.txt (a folder dataset's:
a line of splits/{train,valid,test}.txt, or a mask of masks/ when it has no splits/). Of all this only
S is a DVC metric (``metrics/skipped.json``, :func:`skipped_metric`): one column in `dvc exp show`,
and a change in the data shows in `dvc metrics diff`.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from pipeline.core.errors import UserError, first_line

# Why a listed pair was left out. The split stage finds the first three, preprocess the others.
MISSING_FILE = "missing_file"  # no image or no trimap (also when deleted after the split)
DUPLICATE = "duplicate"  # a stem's second and later entries, in either list file
GARBAGE_LINE = "garbage_line"  # not "<stem> <class-id> <species> <breed-id>" with integer ids
UNDECODABLE_IMAGE = "undecodable_image"
UNDECODABLE_TRIMAP = "undecodable_trimap"
SIZE_MISMATCH = "size_mismatch"  # trimap and image of different pixel sizes
BAD_TRIMAP_VALUES = "bad_trimap_values"  # a trimap value outside {1, 2, 3}
UNDECODABLE_MASK = "undecodable_mask"  # a folder dataset's label mask
BAD_MASK_VALUES = "bad_mask_values"  # a label index >= the number of classes, other than ignore_index
REASONS = (
    UNDECODABLE_IMAGE,
    UNDECODABLE_TRIMAP,
    SIZE_MISMATCH,
    BAD_TRIMAP_VALUES,
    UNDECODABLE_MASK,
    BAD_MASK_VALUES,
    MISSING_FILE,
    DUPLICATE,
    GARBAGE_LINE,
)
LISTS = ("trainval", "test")
SPLITS = ("train", "valid", "test")


@dataclass(frozen=True)
class Skipped:
    """One listed entry left out: ``item`` its stem, or ``<list>.txt:<line number>`` for a garbage
    line; ``reason`` one of :data:`REASONS`; ``detail`` one line naming the file and the fix."""

    item: str
    reason: str
    detail: str


def skipped_to_json(skipped: dict[str, list[Skipped]]) -> dict[str, list[dict[str, str]]]:
    """``{name: [Skipped, ...]}`` as plain JSON data, for the split stage's summary.json."""
    return {name: [asdict(s) for s in entries] for name, entries in skipped.items()}


def read_split_summary(path: Path) -> tuple[dict[str, int], dict[str, list[Skipped]]]:
    """From the split stage's summary.json: entries per list file and the skipped ones per list file.

    Returns ``({"trainval": n, "test": n}, {"trainval": [Skipped, ...], "test": [...]})`` for the pets
    (a folder dataset's lists by their names). Raises UserError if the file is missing or was written by
    an older split stage or by hand.
    """
    try:
        summary = json.loads(Path(path).read_text())
        listed = {name: int(n) for name, n in summary["listed"].items()}
        skipped = {name: [Skipped(**s) for s in summary["skipped"][name]] for name in listed}
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run `dvc repro split`") from None
    except (ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a petseg split summary ({first_line(err)}); run `dvc repro -f split`") from None
    return listed, skipped


def build_report(
    listed: dict[str, int],
    list_skips: dict[str, list[Skipped]],
    used: dict[str, int],
    split_skips: dict[str, list[Skipped]],
) -> dict:
    """The data report (shape in the module docstring) as a JSON-ready dict.

    ``listed`` and ``list_skips``: entries and split-stage skips per list file (from
    :func:`read_split_summary`); ``used`` and ``split_skips``: pairs cached and pairs skipped by
    preprocess per split.
    """
    everything = [s for entries in [*list_skips.values(), *split_skips.values()] for s in entries]
    total = {"listed": sum(listed.values()), "used": sum(used.values()), "skipped": len(everything)}
    return {
        "total": {**total, "skipped_fraction": round(_skipped_fraction(total), 6)},
        "skipped_by_reason": {r: sum(s.reason == r for s in everything) for r in REASONS},
        "lists": {name: {"listed": listed[name], "skipped": len(list_skips[name])} for name in listed},
        "splits": {name: {"used": used[name], "skipped": len(split_skips[name])} for name in SPLITS},
        "skipped_stems": {
            r: [s.item for s in everything if s.reason == r] for r in REASONS if any(s.reason == r for s in everything)
        },
        "details": [s.detail for s in everything],
    }


def _skipped_fraction(total: dict) -> float:
    # A hand-made summary may list nothing; make_split itself never returns an empty list.
    return total["skipped"] / max(total["listed"], 1)


def skipped_metric(report: dict) -> dict[str, int]:
    """``{"skipped": S}``: the listed pairs left out of the data, the one count a reviewer compares."""
    return {"skipped": report["total"]["skipped"]}


def summary_line(report: dict) -> str:
    """One line for the log: how many entries were skipped, per reason (only reasons with skips)."""
    total = report["total"]
    reasons = ", ".join(f"{r} {n}" for r, n in report["skipped_by_reason"].items() if n)
    return (
        f"{total['skipped']} of {total['listed']} listed pairs skipped "
        f"({100 * total['skipped_fraction']:.1f} %){': ' + reasons if reasons else ''}"
    )


def check_report(report: dict, max_bad_fraction: float, report_path: Path) -> None:
    """Raise UserError if more than ``max_bad_fraction`` of the listed pairs were skipped, or if a
    split has no pair left; the message names ``report_path``, where the stems and reasons are."""
    total = report["total"]
    # From the counts: skipped_fraction is rounded for reading, and rounding may hide an excess.
    fraction = _skipped_fraction(total)
    if fraction > max_bad_fraction:
        raise UserError(
            f"{total['skipped']} of {total['listed']} pairs skipped ({100 * fraction:.1f} %) "
            f"> data.max_bad_fraction {max_bad_fraction}; see {report_path} for the stems and reasons, "
            "fix or remove them, or raise data.max_bad_fraction"
        )
    for name, counts in report["splits"].items():
        if not counts["used"]:
            raise UserError(
                f"the {name} split has no usable pair left ({counts['skipped']} skipped); see {report_path} "
                "for the stems and reasons and fix or replace them"
            )
