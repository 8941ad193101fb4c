"""Building the preprocessed cache (:mod:`pipeline.data.cache`) from the pairs of a split.

Pairs are decoded (:mod:`pipeline.data.decode`) in a pool of worker processes (one pair's decode is
independent of the others', so the cache is the same for any worker count); the parent writes them
in order.
"""

import multiprocessing
import os
import signal
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import closing
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.core.io import atomic_path
from pipeline.core.messages import hide_bar
from pipeline.core.orphans import die_with_parent
from pipeline.data.cache import CachedSplit, CacheRow, CacheWriter
from pipeline.data.decode import BadPair, resize_pair
from pipeline.data.geometry import Resize, canvas, pad
from pipeline.data.masks import BINARY, IGNORE, LABELS, PackedMasks, pack_mask
from pipeline.data.report import Skipped
from pipeline.data.sources import Source, open_source

# Pairs a worker decodes per task: a few round trips fewer, while a pool's tasks in flight
# (IN_FLIGHT a worker, about 1 MB a pair at 512 px) stay a small, fixed amount of RAM.
CHUNK = 8
IN_FLIGHT = 3


def resolve_workers(value: int | str) -> int:
    """The decode process count for ``preprocess.workers``: "auto" = ``os.cpu_count()`` (1 if unknown),
    else ``value`` (an int >= 1, as params.py checked)."""
    return (os.cpu_count() or 1) if value == "auto" else value


def as_resize(size: Resize | int) -> Resize:
    """``size`` as a :class:`Resize`: an int is the side of a square."""
    return Resize("square", size) if isinstance(size, int) else size


def split_canvas(source: Source, stems: list[str], resize: Resize) -> tuple[int, int]:
    """The canvas (height, width) in pixels of a split of ``stems`` at ``resize``: the square itself, or the
    largest scaled photo rounded up to a multiple of 32 (from the photos' headers; one that cannot be read is
    left out, and a split of none gets the square of the short side)."""
    if resize.mode == "square":
        return resize.side, resize.side
    shapes = [shape for shape in map(source.photo_size, stems) if shape is not None]
    return canvas([resize.scaled(*shape) for shape in shapes] or [(resize.side, resize.side)])


def decode_row(source: Source, stem: str, resize: Resize, board: tuple[int, int]) -> CacheRow | Skipped:
    """One pair as the cache stores it (:meth:`Source.decode`, :func:`resize_pair` to the photo's size at
    ``resize``, padded to the canvas ``board``: images with 0, masks with 255), its native mask packed (a
    binary task's pet pixels, and its ignored pixels when ``source.ignores``; a multi-class task's label map
    at depth :data:`~pipeline.data.masks.LABELS`), or, for a pair the source rejects, the
    :class:`~pipeline.data.report.Skipped` entry with its reason."""
    try:
        image, mask = source.decode(stem)
    except BadPair as err:
        return Skipped(stem, err.reason, str(err))
    size = resize.scaled(*mask.shape)
    small_image, small_mask = resize_pair(image, mask, size)
    small_image, small_mask = pad(small_image, *board, 0), pad(small_mask, *board, IGNORE)
    breed, species = source.breed_species(stem)
    row = CacheRow(stem, breed, species, small_image, small_mask, mask.shape, pack_mask(mask, LABELS), size=size)
    if not source.classes.binary:
        return row
    ignored = pack_mask(mask == IGNORE) if source.ignores else None
    return replace(row, native_bits=pack_mask(mask == 1), ignore_bits=ignored)


def _decode_chunk(source: Source, stems: list[str], resize: Resize, board: tuple[int, int]) -> list[CacheRow | Skipped]:
    return [decode_row(source, stem, resize, board) for stem in stems]


def _init_worker(parent: int) -> None:
    # Ctrl-C signals the whole process group: only the parent handles it, and shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # A parent killed with SIGKILL cannot shut the pool down, and its workers would wait for tasks.
    die_with_parent(parent)


def decode_rows(
    source: Source, stems: list[str], resize: Resize, board: tuple[int, int], workers: int = 1
) -> Iterator[CacheRow | Skipped]:
    """:func:`decode_row` of every stem, in the order of ``stems``, by ``workers`` processes.

    With 1 the pairs are decoded here; with more, in a pool of forked processes, CHUNK pairs a task,
    at most IN_FLIGHT tasks a worker submitted ahead, so RAM stays bounded whatever ``len(stems)``.
    The results are the same for any ``workers``.
    """
    if workers == 1:
        for stem in stems:
            yield decode_row(source, stem, resize, board)
        return
    # Forked workers inherit the imported modules; spawned ones would import them again, each pool.
    pool = ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork"), initializer=_init_worker, initargs=(os.getpid(),)
    )
    try:
        pending = deque()
        for start in range(0, len(stems), CHUNK):
            pending.append(pool.submit(_decode_chunk, source, stems[start : start + CHUNK], resize, board))
            if len(pending) >= workers * IN_FLIGHT:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        pool.shutdown(cancel_futures=True)


def build_cache(
    root: Path,
    stems: list[str],
    size: Resize | int,
    boundary: str,
    progress: bool = True,
    workers: int = 1,
    task: str = "auto",
) -> CachedSplit:
    """Decode every stem of the dataset at ``root`` (:func:`~pipeline.data.sources.open_source` with ``task``
    and ``boundary``) once, in RAM (tests, benchmarks; the preprocess stage streams with
    :func:`write_cache` instead), keep its native-size mask, and resize it (``size``: a :class:`Resize`, or
    the side of a square) onto the split's canvas (:func:`split_canvas`); skip the pairs that fail.

    A pair the source rejects is left out of the arrays and listed in ``skipped`` with its reason and
    message, so the split holds the N good pairs of ``stems``, in their order. ``native_ignore`` is
    filled only for a binary task whose masks may hold ignored pixels. Raises UserError as
    :func:`~pipeline.data.sources.open_source`.
    """
    source, resize = open_source(root, task, boundary), as_resize(size)
    board = split_canvas(source, stems, resize)
    # Room for every stem, sliced to the good ones at the end: one allocation, no copy.
    images = np.empty((len(stems), *board, 3), np.uint8)
    masks = np.empty((len(stems), *board), np.uint8)
    rows, skipped = [], []
    decoded = decode_rows(source, stems, resize, board, workers)
    # A context, so that an error mid-way ends the bar's line before its message is printed.
    with tqdm(decoded, desc="preprocess", total=len(stems), unit="img", disable=hide_bar(progress)) as bar:
        for row in bar:
            if isinstance(row, Skipped):
                skipped.append(row)
                continue
            n = len(rows)
            images[n], masks[n] = row.image, row.mask
            rows.append(replace(row, image=images[n], mask=masks[n]))  # views: each pixel held once
    shapes, classes = [row.shape for row in rows], source.classes
    ignores = classes.binary and source.ignores
    return CachedSplit(
        images[: len(rows)],
        masks[: len(rows)],
        [row.stem for row in rows],
        PackedMasks.from_packed([row.native_bits for row in rows], shapes, BINARY if classes.binary else LABELS),
        [row.breed for row in rows],
        [row.species for row in rows],
        PackedMasks.from_packed([row.ignore_bits for row in rows], shapes) if ignores else None,
        tuple(skipped),
        classes,
        np.array([row.size for row in rows], np.int64).reshape(-1, 2),
        resize,
    )


def write_cache(
    root: Path,
    stems: list[str],
    dest: Path,
    size: Resize | int,
    boundary: str,
    workers: int = 1,
    progress: bool = True,
    task: str = "auto",
) -> tuple[int, tuple[Skipped, ...]]:
    """Decode ``stems`` by ``workers`` processes (:func:`decode_rows`) into a cache folder at ``dest``
    (pipeline/data/cache.py's layout), atomically, a pair at a time: RAM does not grow with ``len(stems)``.

    Returns the number of pairs written and the :class:`~pipeline.data.report.Skipped` ones, in the
    order of ``stems``. The folder holds what :func:`build_cache` returns for the same arguments.
    Raises UserError as :func:`~pipeline.data.sources.open_source`.
    """
    skipped, source, resize = [], open_source(root, task, boundary), as_resize(size)
    ignores, board = source.classes.binary and source.ignores, split_canvas(source, stems, resize)
    rows = closing(decode_rows(source, stems, resize, board, workers))  # shut the pool down on any error
    with atomic_path(dest) as tmp, CacheWriter(tmp, board, ignores, source.classes, resize) as writer, rows as decoded:
        # A context, so that an error mid-way ends the bar's line before its message is printed.
        with tqdm(decoded, desc="preprocess", total=len(stems), unit="img", disable=hide_bar(progress)) as bar:
            for row in bar:
                if isinstance(row, Skipped):
                    skipped.append(row)
                else:
                    writer.add(row)
    return len(stems) - len(skipped), tuple(skipped)
