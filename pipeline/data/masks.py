"""Masks of different sizes (one per photo at its own resolution) packed in flat arrays, and the ignore label.

A binary task's masks are bit-packed (8 pixels a byte); a multi-class task's label maps are kept a byte a
pixel, class indices with :data:`IGNORE` for ignored pixels (the mask's "depth", 1 or 8 bits).
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Mask value of a pixel that counts in no loss and no metric (the trimap's boundary band under
# preprocess.boundary: ignore, or the fill outside a rotated training image). 255 is the usual void
# label: Pascal VOC's masks and torchvision's segmentation references use it.
IGNORE = 255


BINARY, LABELS = 1, 8  # bits a pixel: bit-packed binary masks, byte label maps


def pack_mask(mask: np.ndarray, depth: int = BINARY) -> np.ndarray:
    """One 2-D mask as flat uint8, row-major: at depth :data:`BINARY` (values {0, 1} or bool)
    ceil(height * width / 8) bytes, 8 pixels a byte, the last byte padded with zeros; at depth
    :data:`LABELS` (class indices and :data:`IGNORE`) height * width bytes. Raises ValueError on a
    mask that is not 2-D."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    if depth == LABELS:
        return np.ascontiguousarray(mask, np.uint8).ravel().copy()
    return np.packbits(mask.astype(bool).ravel())


@dataclass(frozen=True)
class PackedMasks:
    """N masks of varying size, stored as one byte string.

    ``bits``: uint8 (B,), each mask row-major as :func:`pack_mask` gives it at ``depth``; ``offsets``:
    int64 (N + 1,) byte offset of each mask in ``bits``; ``shapes``: int64 (N, 2), (height, width) in
    pixels; ``depth``: :data:`BINARY` or :data:`LABELS`. ``masks[i]`` gives uint8 (height, width): {0, 1}
    at depth 1, the label map at depth 8. A photo of 500x375 pixels costs 23 kB at depth 1, 188 kB at 8.
    """

    bits: np.ndarray
    offsets: np.ndarray
    shapes: np.ndarray
    depth: int = BINARY

    @classmethod
    def pack(cls, masks: Sequence[np.ndarray], depth: int = BINARY) -> "PackedMasks":
        """Pack 2-D masks (any shape each) at ``depth``. Raises ValueError on a non-2-D mask."""
        chunks, shapes = [], []
        for mask in masks:
            chunks.append(pack_mask(mask, depth))
            shapes.append(mask.shape)
        return cls.from_packed(chunks, shapes, depth)

    @classmethod
    def from_packed(
        cls, chunks: Sequence[np.ndarray], shapes: Sequence[tuple[int, int]], depth: int = BINARY
    ) -> "PackedMasks":
        """Join masks already packed by :func:`pack_mask` at ``depth``, with their (height, width) ``shapes``."""
        offsets = np.zeros(len(chunks) + 1, np.int64)
        offsets[1:] = np.cumsum([len(c) for c in chunks])
        bits = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
        return cls(bits, offsets, np.array(shapes, np.int64).reshape(-1, 2), depth)

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> np.ndarray:
        h, w = (int(v) for v in self.shapes[i])
        if self.depth == LABELS:
            return np.array(self.packed(i)).reshape(h, w)
        return np.unpackbits(self.packed(i), count=h * w).reshape(h, w)

    def packed(self, i: int) -> np.ndarray:
        """Mask ``i`` as :func:`pack_mask` gave it: uint8 (ceil(height * width / 8),), a view into ``bits``."""
        return self.bits[self.offsets[i] : self.offsets[i + 1]]

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The three arrays under ``<prefix>_bits``, ``<prefix>_offsets``, ``<prefix>_shapes``, and at depth
        :data:`LABELS` ``<prefix>_depth`` (for np.savez)."""
        arrays = {f"{prefix}_bits": self.bits, f"{prefix}_offsets": self.offsets, f"{prefix}_shapes": self.shapes}
        if self.depth != BINARY:
            arrays[f"{prefix}_depth"] = np.array(self.depth)
        return arrays

    @classmethod
    def from_arrays(cls, data, prefix: str, depth: int | None = None) -> "PackedMasks":
        """Inverse of :meth:`to_arrays` on a mapping (e.g. an open ``np.load`` file); ``depth`` overrides
        the stored one. Raises KeyError."""
        if depth is None:
            depth = int(data[f"{prefix}_depth"]) if f"{prefix}_depth" in data else BINARY
        return cls(data[f"{prefix}_bits"], data[f"{prefix}_offsets"], data[f"{prefix}_shapes"], depth)


def target_mask(masks: PackedMasks, ignore: PackedMasks | None, i: int) -> np.ndarray:
    """Mask ``i`` of ``masks`` as uint8 (height, width): binary masks in {0, 1, 255}, :data:`IGNORE` where
    mask ``i`` of ``ignore`` (same shape) is 1, nowhere if ``ignore`` is None; a label map (depth
    :data:`LABELS`, which holds its ignored pixels itself) as it is."""
    mask = masks[i]
    if ignore is not None:
        mask[ignore[i].astype(bool)] = IGNORE
    return mask
