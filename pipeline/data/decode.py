"""Decoding one image/trimap pair of the pets: the photo as RGB, the trimap as a mask, both resized for the cache.

Trimap values follow the dataset README: 1 = pet, 2 = background, 3 = boundary. Masks are uint8: for
``task: binary`` 0 = background, 1 = pet and :data:`~pipeline.data.masks.IGNORE` (255) = counted in no
loss or metric; for ``task: trimap`` the class indices 0 background, 1 pet, 2 boundary.
"""

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.core.constants import BOUNDARY_POLICIES
from pipeline.core.errors import UserError
from pipeline.data.layout import image_path, trimap_path
from pipeline.data.masks import IGNORE
from pipeline.data.report import BAD_TRIMAP_VALUES, MISSING_FILE, SIZE_MISMATCH, UNDECODABLE_IMAGE, UNDECODABLE_TRIMAP

TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BOUNDARY = 1, 2, 3


class BadPair(UserError):
    """An image/trimap pair that cannot be used; ``reason`` is one of :data:`pipeline.data.report.REASONS`."""

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
    check_trimap(trimap)
    mask = (trimap == TRIMAP_PET).astype(np.uint8)
    mask[trimap == TRIMAP_BOUNDARY] = {"pet": 1, "background": 0, "ignore": IGNORE}[boundary]
    return mask


def trimap_to_classes(trimap: np.ndarray) -> np.ndarray:
    """The trimap's three classes re-indexed for ``task: trimap``: uint8 (H, W) with 0 background, 1 pet,
    2 boundary (:data:`pipeline.data.classes.PET_CLASSES`' order) from ``trimap`` uint8 (H, W) in
    {1 pet, 2 background, 3 boundary}. Raises ValueError on any other value."""
    check_trimap(trimap)
    return np.array([0, 1, 0, 2], np.uint8)[trimap]


def check_trimap(trimap: np.ndarray) -> None:
    """Raise ValueError if ``trimap`` holds a value other than 1 (pet), 2 (background), 3 (boundary)."""
    bad = np.setdiff1d(np.unique(trimap), [TRIMAP_PET, TRIMAP_BACKGROUND, TRIMAP_BOUNDARY])
    if bad.size:
        raise ValueError(f"trimap has values {bad.tolist()}; expected only 1 (pet), 2 (background), 3 (boundary)")


# PIL's modes of one 16-bit channel; "I" (32-bit integers) is how older Pillows open a 16-bit grey PNG.
SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def to_8bit(image: Image.Image) -> Image.Image:
    """A one-channel 16-bit ``image`` (a mode of :data:`SIXTEEN_BIT_MODES`) as 8 bit, mode "L": the high
    byte of each value, ``v // 256`` (mode "I" clipped to 0..65535 first).

    The high byte is what PIL itself keeps of a 16-bit colour PNG or TIFF (it has no 16-bit RGB mode),
    so a grey and a colour 16-bit photo follow one rule; it maps the dtype's full range (0..65535 to
    0..255, within one level of ``round(v * 255 / 65535)``), not each photo's own min..max, so the same
    value always gives the same pixel.
    """
    values = np.clip(np.asarray(image).astype(np.int64), 0, 65535)
    return Image.fromarray((values >> 8).astype(np.uint8))


def open_image(path: Path, mode: str, undecodable: str) -> Image.Image:
    """``path`` decoded fully and converted to ``mode``, except:

    - a label map (mode "L" asked of an L, P or 16-bit file) keeps its raw values: uint8, or uint16/int32
      for a 16-bit mask, whose values >= 256 its caller reports as bad values rather than wrapped or clipped;
    - any other 16-bit one-channel file is first reduced to 8 bit by :func:`to_8bit` (a grey photo then
      becomes RGB by repeating its channel).

    Raises :class:`BadPair` with :data:`MISSING_FILE` or ``undecodable``.
    """
    try:
        with Image.open(path) as img:
            img.load()  # decode fully, so a truncated file fails here, not later
            # A label map keeps its raw values: convert("L") would remap a palette by luminance, and clip
            # a 16-bit value to 255 (which may be the ignore index).
            if mode == "L" and img.mode in ("L", "P", *SIXTEEN_BIT_MODES):
                return img.copy()
            if img.mode in SIXTEEN_BIT_MODES:
                return to_8bit(img).convert(mode)
            return img.convert(mode)
    except FileNotFoundError:
        raise BadPair(MISSING_FILE, f"{path}: file not found; rerun the download and split stages") from None
    except (UnidentifiedImageError, OSError) as err:
        raise BadPair(undecodable, f"{path}: cannot decode ({err}); replace the file or delete the pair") from None


def same_size(mask: Image.Image, image: Image.Image, path: Path, kind: str) -> np.ndarray:
    """``mask`` (the ``kind`` of file at ``path``) as an array (H, W) of its raw values (uint8; uint16 or
    int32 for a 16-bit file) if it has ``image``'s size; else raises :class:`BadPair` with :data:`SIZE_MISMATCH`."""
    if mask.size != image.size:
        raise BadPair(
            SIZE_MISMATCH,
            f"{path}: {kind} is {mask.size[0]}x{mask.size[1]} px but its image is "
            f"{image.size[0]}x{image.size[1]}; replace the file or delete the pair",
        )
    return np.asarray(mask)


def decode_pair(root: Path, stem: str, boundary: str, task: str = "binary") -> tuple[Image.Image, np.ndarray]:
    """Decode one image/trimap pair at the photo's own resolution.

    The image is opened with PIL whatever its real format (the official set has PNG and GIF files
    named .jpg) and converted to RGB. Returns the RGB image and the mask uint8 (H, W): for ``task``
    "binary" in {0, 1} or, under "ignore", {0, 1, 255} (:func:`trimap_to_mask` with ``boundary``); for
    "trimap" the three classes (:func:`trimap_to_classes`). Raises :class:`BadPair`
    (a UserError) for a missing or undecodable file, bad trimap values, or a trimap whose size
    differs from the image's, with the reason as its ``reason``.
    """
    image = open_image(image_path(root, stem), "RGB", UNDECODABLE_IMAGE)
    tpath = trimap_path(root, stem)
    trimap = same_size(open_image(tpath, "L", UNDECODABLE_TRIMAP), image, tpath, "trimap")
    try:
        mask = trimap_to_classes(trimap) if task == "trimap" else trimap_to_mask(trimap, boundary)
    except ValueError as err:
        raise BadPair(BAD_TRIMAP_VALUES, f"{tpath}: {err}; replace the file or delete the pair") from None
    return image, mask


def _hw(size: int | tuple[int, int]) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else size


def resize_image(image: Image.Image, size: int | tuple[int, int]) -> np.ndarray:
    """An RGB photo resized bilinearly (PIL) to ``size`` pixels, a (height, width) pair or an int for a square:
    uint8 (height, width, 3).

    The one resize of photos: the cache's and ``petseg predict``'s, so prediction sees photos as training did.
    """
    height, width = _hw(size)
    return np.asarray(image.resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def resize_pair(image: Image.Image, mask: np.ndarray, size: int | tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to ``size`` pixels ((height, width), or an int for a square): the image as :func:`resize_image`,
    the mask with nearest neighbour.

    Returns image uint8 (height, width, 3) and mask uint8 (height, width) with the values of ``mask``
    (nearest neighbour invents none, so :data:`IGNORE` stays 255).
    """
    height, width = _hw(size)
    small = Image.fromarray(mask).resize((width, height), Image.Resampling.NEAREST)
    return resize_image(image, (height, width)), np.asarray(small, dtype=np.uint8)


def load_pair(root: Path, stem: str, size: int, boundary: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_pair` then :func:`resize_pair`: image uint8 (size, size, 3), mask uint8 (size, size)."""
    return resize_pair(*decode_pair(root, stem, boundary), size)
