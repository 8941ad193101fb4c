"""Decoding image/trimap pairs, trimap → mask, and building the preprocessed cache (pipeline/cache.py).

Trimap values follow the dataset README: 1 = pet, 2 = background, 3 = boundary. Masks are uint8
with 0 = background, 1 = pet and :data:`~pipeline.masks.IGNORE` (255) = counted in no loss or metric.
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pipeline.cache import CachedSplit
from pipeline.data_report import (
    BAD_TRIMAP_VALUES,
    MISSING_FILE,
    SIZE_MISMATCH,
    UNDECODABLE_IMAGE,
    UNDECODABLE_TRIMAP,
    Skipped,
)
from pipeline.errors import UserError
from pipeline.layout import UNKNOWN_SPECIES, breed_of, image_path, read_species, trimap_path
from pipeline.masks import IGNORE, PackedMasks
from pipeline.params import BOUNDARY_POLICIES

TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BOUNDARY = 1, 2, 3


class BadPair(UserError):
    """An image/trimap pair that cannot be used; ``reason`` is one of :data:`pipeline.data_report.REASONS`."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def trimap_to_mask(trimap: np.ndarray, boundary: str = "pet") -> np.ndarray:
    """Map an Oxford-IIIT Pet trimap to a mask.

    ``trimap``: uint8 (H, W) with values in {1 pet, 2 background, 3 boundary}. ``boundary``: "pet"
    counts the boundary band as pet, "background" as background, "ignore" marks it :data:`IGNORE`.
    Returns uint8 (H, W) in {0, 1}, or {0, 1, 255} under "ignore". Raises ValueError on any other
    trimap value or policy.
    """
    if boundary not in BOUNDARY_POLICIES:
        raise ValueError(f"boundary policy must be one of {', '.join(BOUNDARY_POLICIES)}, got {boundary!r}")
    bad = np.setdiff1d(np.unique(trimap), [TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BOUNDARY])
    if bad.size:
        raise ValueError(f"trimap has values {bad.tolist()}; expected only 1 (pet), 2 (background), 3 (boundary)")
    mask = (trimap == TRIMAP_PET).astype(np.uint8)
    mask[trimap == TRIMAP_BOUNDARY] = {"pet": 1, "background": 0, "ignore": IGNORE}[boundary]
    return mask


def _open(path: Path, mode: str, undecodable: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            # A label map keeps its raw values: convert("L") would remap a palette by luminance.
            if mode == "L" and img.mode in ("L", "P"):
                img.load()  # decode fully, so a truncated file fails here, not later
                return img.copy()
            return img.convert(mode)
    except FileNotFoundError:
        raise BadPair(MISSING_FILE, f"{path}: file not found; rerun the download and split stages") from None
    except (UnidentifiedImageError, OSError) as err:
        raise BadPair(undecodable, f"{path}: cannot decode ({err}); replace the file or delete the pair") from None


def decode_pair(root: Path, stem: str, boundary: str) -> tuple[Image.Image, np.ndarray]:
    """Decode one image/trimap pair at the photo's own resolution.

    The image is opened with PIL whatever its real format (the official set has PNG and GIF files
    named .jpg) and converted to RGB. Returns the RGB image and the mask uint8 (H, W) in {0, 1} or,
    under "ignore", {0, 1, 255} (:func:`trimap_to_mask` with ``boundary``). Raises :class:`BadPair`
    (a UserError) for a missing or undecodable file, bad trimap values, or a trimap whose size
    differs from the image's, with the reason as its ``reason``.
    """
    image = _open(image_path(root, stem), "RGB", UNDECODABLE_IMAGE)
    tpath = trimap_path(root, stem)
    trimap = _open(tpath, "L", UNDECODABLE_TRIMAP)
    if trimap.size != image.size:
        raise BadPair(
            SIZE_MISMATCH,
            f"{tpath}: trimap is {trimap.size[0]}x{trimap.size[1]} px but its image is "
            f"{image.size[0]}x{image.size[1]}; replace the file or delete the pair",
        )
    try:
        mask = trimap_to_mask(np.asarray(trimap), boundary)
    except ValueError as err:
        raise BadPair(BAD_TRIMAP_VALUES, f"{tpath}: {err}; replace the file or delete the pair") from None
    return image, mask


def resize_pair(image: Image.Image, mask: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size`` x ``size`` pixels: the image bilinearly, the mask with nearest neighbour.

    Returns image uint8 (size, size, 3) and mask uint8 (size, size) with the values of ``mask``
    (nearest neighbour invents none, so :data:`IGNORE` stays 255).
    """
    resized = image.resize((size, size), Image.Resampling.BILINEAR)
    small = Image.fromarray(mask).resize((size, size), Image.Resampling.NEAREST)
    return np.asarray(resized, dtype=np.uint8), np.asarray(small, dtype=np.uint8)


def load_pair(root: Path, stem: str, size: int, boundary: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_pair` then :func:`resize_pair`: image uint8 (size, size, 3), mask uint8 (size, size)."""
    return resize_pair(*decode_pair(root, stem, boundary), size)


def build_cache(root: Path, stems: list[str], size: int, boundary: str, progress: bool = True) -> CachedSplit:
    """Decode every stem once, keep its native-size mask, and resize it; skip the pairs that fail.

    A pair :func:`decode_pair` rejects is left out of the arrays and listed in ``skipped`` with
    its reason and message, so the split holds the N good pairs of ``stems``, in their order.
    ``native_ignore`` is filled only when ``boundary`` is "ignore", so caches of the other policies
    stay byte for byte what they were. Raises UserError if annotations/list.txt is missing.
    """
    root = Path(root)
    species = read_species(root / "annotations" / "list.txt")
    # Room for every stem, sliced to the good ones at the end: one allocation, no copy.
    images = np.empty((len(stems), size, size, 3), np.uint8)
    masks = np.empty((len(stems), size, size), np.uint8)
    kept, native, ignored, skipped = [], [], [], []
    for stem in tqdm(stems, desc="preprocess", unit="img", disable=not progress):
        try:
            image, mask = decode_pair(root, stem, boundary)
        except BadPair as err:
            skipped.append(Skipped(stem, err.reason, str(err)))
            continue
        images[len(kept)], masks[len(kept)] = resize_pair(image, mask, size)
        kept.append(stem)
        native.append(mask == 1)
        ignored.append(mask == IGNORE)
    return CachedSplit(
        images[: len(kept)],
        masks[: len(kept)],
        kept,
        PackedMasks.pack(native),
        [breed_of(s) for s in kept],
        [species.get(s, UNKNOWN_SPECIES) for s in kept],
        PackedMasks.pack(ignored) if boundary == "ignore" else None,
        tuple(skipped),
    )
