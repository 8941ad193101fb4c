"""The scale photos are taken at: squashed to a square, or their short side set with the aspect kept
(``preprocess.resize``), and padded to a multiple of 32 pixels for the models.

The cache, training's crops, evaluation, ONNX and ``petseg predict`` all take a photo at the scale a
:class:`Resize` gives it, so a model always sees objects at the size it was trained on. Padding goes at the
bottom and right, so an image's pixels keep their coordinates and its logits are the top-left (height,
width) of the padded ones.
"""

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.core.constants import RESIZE_MODES, SIZE_MULTIPLE


@dataclass(frozen=True)
class Resize:
    """``mode`` "square": every photo becomes ``side`` x ``side`` pixels (its aspect lost); "keep_aspect": its
    short side becomes ``side`` pixels and the long side follows, rounded (mmsegmentation's and torchvision's
    segmentation references scale this way). Raises ValueError for another mode or a side below 1."""

    mode: str
    side: int

    def __post_init__(self):
        if self.mode not in RESIZE_MODES or self.side < 1:
            raise ValueError(f"resize must be one of {', '.join(RESIZE_MODES)} with a side >= 1, got {self}")

    def scaled(self, height: int, width: int) -> tuple[int, int]:
        """The (height, width) in pixels of a ``height`` x ``width`` photo at this scale."""
        if self.mode == "square":
            return self.side, self.side
        scale = self.side / min(height, width)
        return max(1, round(height * scale)), max(1, round(width * scale))


def describe(resize: Resize) -> str:
    """``resize`` in words, e.g. "at 128x128 px" or "with a short side of 320 px"."""
    if resize.mode == "square":
        return f"at {resize.side}x{resize.side} px"
    return f"with a short side of {resize.side} px"


def resize_to_json(resize: Resize) -> dict:
    """``resize`` as JSON data (the cache's meta.json, checkpoints, ONNX metadata)."""
    return asdict(resize)


def resize_from_json(record: dict) -> Resize:
    """Inverse of :func:`resize_to_json`. Raises KeyError, TypeError or ValueError on a malformed record."""
    return Resize(str(record["mode"]), int(record["side"]))


def padded(height: int, width: int) -> tuple[int, int]:
    """``height`` and ``width`` rounded up to multiples of :data:`~pipeline.core.constants.SIZE_MULTIPLE` (32),
    the input sizes both models take."""
    return tuple(math.ceil(n / SIZE_MULTIPLE) * SIZE_MULTIPLE for n in (height, width))


def extents(shape: tuple[int, ...], sizes: np.ndarray | None) -> np.ndarray:
    """Each image's (height, width) on a canvas of images (or masks) of ``shape`` (N, H, W, ...): ``sizes``
    as int64 (N, 2), or the whole canvas (H, W) for every image when it is None."""
    if sizes is None:
        return np.tile(np.array(shape[1:3], np.int64), (shape[0], 1))
    return np.asarray(sizes, np.int64).reshape(-1, 2)


def own_padding(sizes: np.ndarray) -> np.ndarray:
    """Each (height, width) of ``sizes`` int (N, 2) :func:`padded`: int64 (N, 2), the input each image is taken
    at, so that it carries no more padding than the models need (a split's canvas may hold much more: a
    portrait photo's on a canvas that also fits landscapes)."""
    return (np.ceil(np.asarray(sizes, np.float64) / SIZE_MULTIPLE) * SIZE_MULTIPLE).astype(np.int64).reshape(-1, 2)


def same_shape_runs(shapes: np.ndarray) -> dict[tuple[int, int], list[int]]:
    """The positions of ``shapes`` int (N, 2) by shape, each list in order, shapes in order of first appearance."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (height, width) in enumerate(np.asarray(shapes).tolist()):
        groups.setdefault((height, width), []).append(i)
    return groups


def canvas(sizes: Iterable[tuple[int, int]]) -> tuple[int, int]:
    """The (height, width) that holds every (height, width) of ``sizes``, :func:`padded`. Raises ValueError if
    ``sizes`` is empty."""
    heights, widths = zip(*sizes, strict=True)
    return padded(max(heights), max(widths))


def pad(array: np.ndarray, height: int, width: int, fill: int) -> np.ndarray:
    """``array`` (h, w, ...) padded with ``fill`` at the bottom and right to (height, width, ...), same dtype.
    Raises ValueError if it is larger than that."""
    h, w = array.shape[:2]
    if h > height or w > width:
        raise ValueError(f"cannot pad a {h}x{w} array to {height}x{width}")
    out = np.full((height, width, *array.shape[2:]), fill, array.dtype)
    out[:h, :w] = array
    return out
