"""Train/valid/test split, trimap → mask, and the preprocessed cache (uint8 arrays per split).

Trimap values follow the dataset README: 1 = pet, 2 = background, 3 = boundary. Masks are uint8
with 0 = background, 1 = pet and :data:`~pipeline.masks.IGNORE` (255) = counted in no loss or metric.
"""

import random
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from pipeline.errors import UserError
from pipeline.io import atomic_path
from pipeline.layout import UNKNOWN_SPECIES, breed_of, image_path, read_species, read_stems, trimap_path
from pipeline.masks import IGNORE, PackedMasks
from pipeline.params import BOUNDARY_POLICIES

TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BOUNDARY = 1, 2, 3


@dataclass(frozen=True)
class Split:
    """Stem lists of the three splits, and how many listed stems were skipped for missing files."""

    train: list[str]
    valid: list[str]
    test: list[str]
    skipped: dict[str, int]


def make_split(root: Path, valid_fraction: float, seed: int) -> Split:
    """Split official trainval.txt into train/valid and take test.txt as test.

    The valid set is ``round(valid_fraction * len(trainval))`` stems drawn with ``random.Random(seed)``
    from the sorted trainval stems, so the split depends only on the stems, the fraction and the
    seed. Stems without both an image and a trimap are skipped; ``skipped`` counts them per list.
    Raises UserError if a split would be empty.
    """
    root = Path(root)
    lists, skipped = {}, {}
    for name in ("trainval", "test"):
        stems = sorted(set(read_stems(root / "annotations" / f"{name}.txt")))
        present = [s for s in stems if image_path(root, s).is_file() and trimap_path(root, s).is_file()]
        lists[name], skipped[name] = present, len(stems) - len(present)
    trainval = lists["trainval"]
    n_valid = round(valid_fraction * len(trainval))
    valid = sorted(random.Random(seed).sample(trainval, n_valid))
    chosen = set(valid)
    split = Split([s for s in trainval if s not in chosen], valid, lists["test"], skipped)
    for name in ("train", "valid", "test"):
        if not getattr(split, name):
            raise UserError(
                f"{root}: the {name} split is empty ({len(trainval)} trainval, {len(lists['test'])} test "
                "stems with files); check the dataset and split.valid_fraction"
            )
    return split


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


def _open(path: Path, mode: str) -> Image.Image:
    try:
        with Image.open(path) as img:
            # A label map keeps its raw values: convert("L") would remap a palette by luminance.
            if mode == "L" and img.mode in ("L", "P"):
                img.load()  # decode fully, so a truncated file fails here, not later
                return img.copy()
            return img.convert(mode)
    except FileNotFoundError:
        raise UserError(f"{path}: file not found; rerun the download and split stages") from None
    except (UnidentifiedImageError, OSError) as err:
        raise UserError(f"{path}: cannot decode ({err}); replace the file or delete the pair") from None


def decode_pair(root: Path, stem: str, boundary: str) -> tuple[Image.Image, np.ndarray]:
    """Decode one image/trimap pair at the photo's own resolution.

    The image is opened with PIL whatever its real format (the official set has PNG and GIF files
    named .jpg) and converted to RGB. Returns the RGB image and the mask uint8 (H, W) in {0, 1} or,
    under "ignore", {0, 1, 255} (:func:`trimap_to_mask` with ``boundary``). Raises UserError for a
    missing or undecodable file, bad trimap values, or a trimap whose size differs from the image's.
    """
    image = _open(image_path(root, stem), "RGB")
    tpath = trimap_path(root, stem)
    trimap = _open(tpath, "L")
    if trimap.size != image.size:
        raise UserError(
            f"{tpath}: trimap is {trimap.size[0]}x{trimap.size[1]} px but its image is "
            f"{image.size[0]}x{image.size[1]}; replace the file or delete the pair"
        )
    try:
        mask = trimap_to_mask(np.asarray(trimap), boundary)
    except ValueError as err:
        raise UserError(f"{tpath}: {err}") from None
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


@dataclass(frozen=True)
class CachedSplit:
    """One split of the cache.

    ``images`` uint8 (N, S, S, 3) and ``masks`` uint8 (N, S, S) in {0, 1, 255} at ``image_size`` S
    (255 = :data:`IGNORE`, only under preprocess.boundary: ignore); ``native`` the same N masks at
    each photo's own size (what evaluation scores against), binary: 1 = pet; ``native_ignore``
    (ignore policy only, else None) marks each native mask's ignored pixels with 1; ``stems``,
    ``breeds`` (from the stem) and ``species`` ("cat", "dog" or "unknown", from annotations/list.txt)
    as lists of N strings. Raises ValueError if ``native_ignore`` and ``native`` differ in shapes.
    """

    images: np.ndarray
    masks: np.ndarray
    stems: list[str]
    native: PackedMasks
    breeds: list[str]
    species: list[str]
    native_ignore: PackedMasks | None = None

    def __post_init__(self):
        if self.native_ignore is not None and not np.array_equal(self.native_ignore.shapes, self.native.shapes):
            raise ValueError("native_ignore masks differ in number or size from the native masks")


def build_cache(root: Path, stems: list[str], size: int, boundary: str, progress: bool = True) -> CachedSplit:
    """Decode every stem once, keep its native-size mask, and resize it (UserErrors as :func:`decode_pair`).

    ``native_ignore`` is filled only when ``boundary`` is "ignore", so caches of the other policies
    stay byte for byte what they were.
    """
    root = Path(root)
    species = read_species(root / "annotations" / "list.txt")
    images = np.empty((len(stems), size, size, 3), np.uint8)
    masks = np.empty((len(stems), size, size), np.uint8)
    native, ignored = [], []
    for i, stem in enumerate(tqdm(stems, desc="preprocess", unit="img", disable=not progress)):
        image, mask = decode_pair(root, stem, boundary)
        images[i], masks[i] = resize_pair(image, mask, size)
        native.append(mask == 1)
        ignored.append(mask == IGNORE)
    return CachedSplit(
        images,
        masks,
        list(stems),
        PackedMasks.pack(native),
        [breed_of(s) for s in stems],
        [species.get(s, UNKNOWN_SPECIES) for s in stems],
        PackedMasks.pack(ignored) if boundary == "ignore" else None,
    )


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
