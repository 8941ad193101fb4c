"""The preprocessed cache: one uncompressed .npz of uint8 arrays per split, and its reader.

Masks are uint8 with 0 = background, 1 = pet and :data:`~pipeline.masks.IGNORE` (255) = counted in
no loss or metric. Kept apart from pipeline/data.py (decoding, splitting) so the stages that only
read the cache do not depend on how it is built.
"""

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.io import atomic_path
from pipeline.masks import PackedMasks


@dataclass(frozen=True)
class CachedSplit:
    """One split of the cache.

    ``images`` uint8 (N, S, S, 3) and ``masks`` uint8 (N, S, S) in {0, 1, 255} at ``image_size`` S
    (255 = :data:`~pipeline.masks.IGNORE`, only under preprocess.boundary: ignore); ``native`` the same N masks at
    each photo's own size (what evaluation scores against), binary: 1 = pet; ``native_ignore``
    (ignore policy only, else None) marks each native mask's ignored pixels with 1; ``stems``,
    ``breeds`` (from the stem) and ``species`` ("cat", "dog" or "unknown", from annotations/list.txt)
    as lists of N strings. ``skipped``: the pairs :func:`pipeline.data.build_cache` left out (not
    stored in the .npz, so empty after :func:`load_cache`). Raises ValueError if ``native_ignore`` and ``native``
    differ in shapes.
    """

    images: np.ndarray
    masks: np.ndarray
    stems: list[str]
    native: PackedMasks
    breeds: list[str]
    species: list[str]
    native_ignore: PackedMasks | None = None
    skipped: tuple = ()  # pipeline.data_report.Skipped entries

    def __post_init__(self):
        if self.native_ignore is not None and not np.array_equal(self.native_ignore.shapes, self.native.shapes):
            raise ValueError("native_ignore masks differ in number or size from the native masks")


def save_cache(path: Path, split: CachedSplit) -> None:
    """Write a split as an uncompressed .npz, atomically; ``native_ignore`` (if any) as ``native_ignore_*``."""
    ignore = {} if split.native_ignore is None else split.native_ignore.to_arrays("native_ignore")
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(
            f,
            images=split.images,
            masks=split.masks,
            stems=np.array(split.stems),
            breeds=np.array(split.breeds),
            species=np.array(split.species),
            **split.native.to_arrays("native"),
            **ignore,
        )


def load_cache(path: Path) -> CachedSplit:
    """Read a split written by :func:`save_cache`; a cache without ``native_ignore_*`` arrays (any
    policy but ignore, or written before it existed) loads with ``native_ignore`` None. Raises
    UserError if missing or malformed."""
    try:
        with np.load(path) as data:
            split = CachedSplit(
                data["images"],
                data["masks"],
                data["stems"].tolist(),
                PackedMasks.from_arrays(data, "native"),
                data["breeds"].tolist(),
                data["species"].tolist(),
                PackedMasks.from_arrays(data, "native_ignore") if "native_ignore_bits" in data else None,
            )
    except FileNotFoundError:
        raise UserError(f"{path}: cache not found; run `dvc repro preprocess`") from None
    except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise UserError(f"{path}: not a petseg cache ({err}); run `dvc repro -f preprocess`") from None
    return split
