"""Binary masks of different sizes (one per photo at its own resolution), bit-packed in flat arrays, and the
ignore label."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Mask value of a pixel that counts in no loss and no metric (the trimap's boundary band under
# preprocess.boundary: ignore, or the fill outside a rotated training image). 255 is the usual void
# label: Pascal VOC's masks and torchvision's segmentation references use it.
IGNORE = 255


def pack_mask(mask: np.ndarray) -> np.ndarray:
    """One 2-D mask (values {0, 1} or bool) as uint8 (ceil(height * width / 8),): row-major, 8 pixels a
    byte, the last byte padded with zeros. Raises ValueError on a mask that is not 2-D."""
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    return np.packbits(mask.astype(bool).ravel())


@dataclass(frozen=True)
class PackedMasks:
    """N binary masks of varying size, stored as one byte string (8 pixels a byte).

    ``bits``: uint8 (B,), each mask row-major and padded to a whole byte; ``offsets``: int64 (N + 1,)
    byte offset of each mask in ``bits``; ``shapes``: int64 (N, 2), (height, width) in pixels.
    ``masks[i]`` gives uint8 (height, width) in {0, 1}. Packing costs a photo of 500x375 pixels 23 kB.
    """

    bits: np.ndarray
    offsets: np.ndarray
    shapes: np.ndarray

    @classmethod
    def pack(cls, masks: Sequence[np.ndarray]) -> "PackedMasks":
        """Pack 2-D masks (any shape each, values {0, 1} or bool). Raises ValueError on a non-2-D mask."""
        chunks, shapes = [], []
        for mask in masks:
            chunks.append(pack_mask(mask))
            shapes.append(mask.shape)
        return cls.from_packed(chunks, shapes)

    @classmethod
    def from_packed(cls, chunks: Sequence[np.ndarray], shapes: Sequence[tuple[int, int]]) -> "PackedMasks":
        """Join masks already packed by :func:`pack_mask`, with their (height, width) ``shapes``."""
        offsets = np.zeros(len(chunks) + 1, np.int64)
        offsets[1:] = np.cumsum([len(c) for c in chunks])
        bits = np.concatenate(chunks) if chunks else np.zeros(0, np.uint8)
        return cls(bits, offsets, np.array(shapes, np.int64).reshape(-1, 2))

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> np.ndarray:
        h, w = (int(v) for v in self.shapes[i])
        return np.unpackbits(self.packed(i), count=h * w).reshape(h, w)

    def packed(self, i: int) -> np.ndarray:
        """Mask ``i`` as :func:`pack_mask` gave it: uint8 (ceil(height * width / 8),), a view into ``bits``."""
        return self.bits[self.offsets[i] : self.offsets[i + 1]]

    def to_arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The three arrays under ``<prefix>_bits``, ``<prefix>_offsets``, ``<prefix>_shapes`` (for np.savez)."""
        return {f"{prefix}_bits": self.bits, f"{prefix}_offsets": self.offsets, f"{prefix}_shapes": self.shapes}

    @classmethod
    def from_arrays(cls, data, prefix: str) -> "PackedMasks":
        """Inverse of :meth:`to_arrays` on a mapping (e.g. an open ``np.load`` file). Raises KeyError."""
        return cls(data[f"{prefix}_bits"], data[f"{prefix}_offsets"], data[f"{prefix}_shapes"])


def target_mask(masks: PackedMasks, ignore: PackedMasks | None, i: int) -> np.ndarray:
    """Mask ``i`` of binary ``masks`` as uint8 (height, width) in {0, 1, 255}: :data:`IGNORE` where
    mask ``i`` of ``ignore`` (same shape) is 1; nowhere if ``ignore`` is None."""
    mask = masks[i]
    if ignore is not None:
        mask[ignore[i].astype(bool)] = IGNORE
    return mask
