"""The preprocessed cache: a folder per split, one .npy file per array, read memory-mapped.

A split of N pairs on a canvas of H x W pixels is a folder holding::

    images.npy                  uint8 (N, H, W, 3)   each photo at its :class:`~pipeline.data.geometry.Resize`'s
    masks.npy                   uint8 (N, H, W)      scale, top-left, padded with 0 (images) and 255 (masks)
    sizes.npy                   int64 (N, 2)         each photo's (height, width) on the canvas, in pixels
    native_bits.npy             uint8 (B,)      the masks at each photo's own size, bit-packed (binary
    native_offsets.npy          int64 (N + 1,)  task) or a byte a pixel (multi-class):
    native_shapes.npy           int64 (N, 2)    pipeline.data.masks.PackedMasks' three arrays
    native_ignore_{bits,offsets,shapes}.npy     the same for the ignored pixels (binary tasks whose
                                                masks may hold some: boundary: ignore, folder datasets)
    meta.json                   {"stems": [N str], "breeds": [N str], "species": [N str],
                                 "classes": the task's classes (pipeline.data.classes.Classes),
                                 "resize": the scale (pipeline.data.geometry.Resize),
                                 "pixels": the masks' pixels by class (pipeline.data.balance.PixelCounts)}

Under ``preprocess.resize: square`` the canvas is the square itself (H = W = S, sizes all (S, S)); under
``keep_aspect`` it holds the split's largest scaled photo, rounded up to a multiple of 32.

:class:`CacheWriter` appends a pair at a time, so writing holds one pair in RAM whatever N.
:func:`load_cache` maps the arrays read-only (``np.load(mmap_mode="r")``): a stage reads only the
pages it touches, from the OS page cache, and DataLoader workers forked from it share those pages
instead of copying the arrays. Masks are uint8 class indices (a binary task: 0 = background, 1 = pet or
the folder's class 1) and :data:`~pipeline.data.masks.IGNORE` (255) = counted in no loss or metric. Kept apart from
pipeline/data/build.py (decoding, splitting) so the stages that only read the cache do not depend on how
it is built.
"""

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError, first_line
from pipeline.core.io import atomic_path
from pipeline.data.balance import PixelCounts
from pipeline.data.classes import BINARY_PETS, Classes, classes_from_json, classes_to_json
from pipeline.data.geometry import Resize, extents, resize_from_json, resize_to_json
from pipeline.data.masks import BINARY, LABELS, PackedMasks, target_mask

META = "meta.json"
# Every .npy header is padded to this length, so the final row count can be written over the first
# one in place. 192 bytes hold the dict of any array of up to 4 int64 dimensions, and keep the data
# 64-byte aligned, as np.save does.
HEADER_BYTES = 192


@dataclass(frozen=True)
class CachedSplit:
    """One split of the cache, in RAM (from :func:`pipeline.data.build.build_cache`) or memory-mapped (from
    :func:`load_cache`).

    ``images`` uint8 (N, H, W, 3) and ``masks`` uint8 (N, H, W) in {0, 1, 255} on the canvas (255 =
    :data:`~pipeline.data.masks.IGNORE`: ignored pixels and the padding); ``sizes`` int64 (N, 2) each photo's
    (height, width) on it (None: the whole canvas); ``resize`` the scale the photos were taken at (None: the
    square canvas); ``counts`` the masks' pixels by class (None: counted here); ``native`` the same N masks at
    each photo's own size (what evaluation scores against), binary: 1 = pet; ``native_ignore``
    (ignore policy only, else None) marks each native mask's ignored pixels with 1; ``stems``,
    ``breeds`` (from the stem) and ``species`` ("cat", "dog" or "unknown", from annotations/list.txt)
    as lists of N strings. ``skipped``: the pairs :func:`pipeline.data.build.build_cache` left out (not
    stored in the cache, so empty after :func:`load_cache`). Raises ValueError if the arrays do not
    have these dtypes and shapes, the counts differ, the native offsets do not fit their bits, or
    ``native_ignore`` and ``native`` differ in shapes. ``classes``: the task's classes; a multi-class task's
    masks hold class indices, its native masks are label maps (depth :data:`~pipeline.data.masks.LABELS`)
    and it has no ``native_ignore``.
    """

    images: np.ndarray
    masks: np.ndarray
    stems: list[str]
    native: PackedMasks
    breeds: list[str]
    species: list[str]
    native_ignore: PackedMasks | None = None
    skipped: tuple = ()  # pipeline.data.report.Skipped entries
    classes: Classes = BINARY_PETS
    sizes: np.ndarray | None = None
    resize: Resize | None = None
    counts: PixelCounts | None = None

    def __post_init__(self):
        shape = self.images.shape
        if self.images.dtype != np.uint8 or len(shape) != 4 or shape[3] != 3:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {shape}")
        if self.masks.dtype != np.uint8 or self.masks.shape != shape[:3]:
            raise ValueError(
                f"masks must be uint8 {shape[:3]} as the images, got {self.masks.dtype} {self.masks.shape}"
            )
        counts = {"stems": len(self.stems), "breeds": len(self.breeds), "species": len(self.species)}
        counts["native masks"] = len(self.native)
        if set(counts.values()) != {shape[0]}:
            raise ValueError(f"{shape[0]} images but " + ", ".join(f"{n} {name}" for name, n in counts.items()))
        offsets = self.native.offsets
        if len(offsets) != shape[0] + 1 or offsets[-1] != len(self.native.bits):
            raise ValueError(
                f"{len(offsets)} native offsets do not fit {shape[0]} masks of {len(self.native.bits)} bytes"
            )
        if self.native_ignore is not None and not np.array_equal(self.native_ignore.shapes, self.native.shapes):
            raise ValueError("native_ignore masks differ in number or size from the native masks")
        if self.native.depth != (BINARY if self.classes.binary else LABELS):
            raise ValueError(f"{self.classes.count} classes but native masks of depth {self.native.depth}")
        self._derive(shape)

    def truth(self, i: int) -> np.ndarray:
        """Image ``i``'s ground truth at its photo's own size: uint8 (height, width), class indices and
        :data:`~pipeline.data.masks.IGNORE` for ignored pixels."""
        return target_mask(self.native, self.native_ignore, i)

    def photo(self, i: int) -> np.ndarray:
        """Image ``i`` without its padding: uint8 (height, width, 3) at the cache's scale (a view)."""
        height, width = (int(n) for n in self.sizes[i])
        return self.images[i, :height, :width]

    def _derive(self, shape: tuple[int, ...]) -> None:
        """Fill the fields left None from the arrays; raise ValueError if ``sizes`` do not fit the canvas."""
        if self.sizes is None:
            object.__setattr__(self, "sizes", extents(shape, None))
        if self.sizes.shape != (shape[0], 2) or (self.sizes > np.array(shape[1:3])).any():
            raise ValueError(f"sizes must be (N, 2) within the {shape[1]}x{shape[2]} canvas, got {self.sizes.shape}")
        if self.resize is None:
            if shape[1] != shape[2]:
                raise ValueError(f"a {shape[1]}x{shape[2]} canvas needs its resize")
            object.__setattr__(self, "resize", Resize("square", shape[1]))
        if self.counts is None:
            counts = PixelCounts(self.classes.count)
            for mask in self.masks:
                counts.add(np.asarray(mask))
            object.__setattr__(self, "counts", counts)


@dataclass(frozen=True)
class CacheRow:
    """One pair as the cache stores it.

    ``image`` uint8 (H, W, 3) and ``mask`` uint8 (H, W) in {0, 1, 255}, on the split's canvas; ``size`` the
    photo's (height, width) on it (None: the whole canvas); ``shape`` the photo's own (height, width) in
    pixels; ``native_bits`` its binary mask (1 = pet) at that size and ``ignore_bits`` its ignored pixels
    (binary tasks with ignored pixels only, else None), each packed by
    :func:`pipeline.data.masks.pack_mask` (a multi-class task's label map at depth 8); ``stem``,
    ``breed``, ``species`` strings.
    """

    stem: str
    breed: str
    species: str
    image: np.ndarray
    mask: np.ndarray
    shape: tuple[int, int]
    native_bits: np.ndarray
    ignore_bits: np.ndarray | None = None
    size: tuple[int, int] | None = None  # None: the whole canvas


def _npy_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """A .npy format 1.0 header (NumPy's documented file format) for a C-order array, HEADER_BYTES long."""
    shape = tuple(int(n) for n in shape)
    text = f"{{'descr': {np.lib.format.dtype_to_descr(dtype)!r}, 'fortran_order': False, 'shape': {shape!r}, }}"
    magic = np.lib.format.magic(1, 0)
    body = text.ljust(HEADER_BYTES - len(magic) - 3) + "\n"  # 2 bytes of header length, then the newline
    return magic + struct.pack("<H", len(body)) + body.encode("latin1")


class _RowFile:
    """A .npy file written a block of rows at a time; the header with the final row count goes in last."""

    def __init__(self, path: Path, dtype: type, row_shape: tuple[int, ...]):
        self.dtype, self.row_shape, self.rows = np.dtype(dtype), row_shape, 0
        self.file = open(path, "wb")
        self.file.write(_npy_header(self.dtype, (0, *row_shape)))

    def append(self, block: np.ndarray) -> None:
        if block.dtype != self.dtype or block.shape[1:] != self.row_shape:
            raise ValueError(
                f"{Path(self.file.name).name}: rows must be {self.dtype} {self.row_shape}, "
                f"got {block.dtype} {block.shape[1:]}"
            )
        self.file.write(np.ascontiguousarray(block).data)
        self.rows += len(block)

    def finish(self) -> None:
        self.file.seek(0)
        self.file.write(_npy_header(self.dtype, (self.rows, *self.row_shape)))
        self.file.close()


class CacheWriter:
    """Writes one split's folder (the layout in the module docstring) a :class:`CacheRow` at a time.

    ``folder`` is created; ``canvas`` the (height, width) of every row, in pixels; ``ignore``: also store each
    row's ``ignore_bits``; ``classes`` and ``resize`` (None: the square canvas) go into meta.json, with the
    rows' pixels by class. Use as a context manager: a clean exit writes the headers and meta.json (last); after
    an exception the files are incomplete, so write into an
    :func:`~pipeline.core.io.atomic_path`.
    :meth:`add` raises ValueError for an image or mask of another size or dtype.
    """

    def __init__(
        self,
        folder: Path,
        canvas: tuple[int, int],
        ignore: bool,
        classes: Classes = BINARY_PETS,
        resize: Resize | None = None,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.meta: dict[str, list[str]] = {"stems": [], "breeds": [], "species": []}
        self.canvas, self.classes = tuple(canvas), classes
        self.resize = resize or Resize("square", canvas[0])
        self.counts = PixelCounts(classes.count)
        self.files = {
            "images": _RowFile(self.folder / "images.npy", np.uint8, (*canvas, 3)),
            "masks": _RowFile(self.folder / "masks.npy", np.uint8, tuple(canvas)),
            "sizes": _RowFile(self.folder / "sizes.npy", np.int64, (2,)),
        }
        self.packs = ("native", "native_ignore") if ignore else ("native",)
        self.ends = dict.fromkeys(self.packs, 0)  # bytes of bits written so far
        for name in self.packs:
            self.files[f"{name}_bits"] = _RowFile(self.folder / f"{name}_bits.npy", np.uint8, ())
            self.files[f"{name}_offsets"] = _RowFile(self.folder / f"{name}_offsets.npy", np.int64, ())
            self.files[f"{name}_shapes"] = _RowFile(self.folder / f"{name}_shapes.npy", np.int64, (2,))
            self.files[f"{name}_offsets"].append(np.zeros(1, np.int64))

    def add(self, row: CacheRow) -> None:
        """Append one pair."""
        self.files["images"].append(row.image[None])
        self.files["masks"].append(row.mask[None])
        self.files["sizes"].append(np.array([row.size or self.canvas], np.int64))
        self.counts.add(row.mask)
        for name, bits in zip(self.packs, (row.native_bits, row.ignore_bits), strict=False):
            self.files[f"{name}_bits"].append(bits)
            self.ends[name] += len(bits)
            self.files[f"{name}_offsets"].append(np.array([self.ends[name]], np.int64))
            self.files[f"{name}_shapes"].append(np.array([row.shape], np.int64))
        for key, value in (("stems", row.stem), ("breeds", row.breed), ("species", row.species)):
            self.meta[key].append(value)

    def __enter__(self) -> "CacheWriter":
        return self

    def __exit__(self, kind, *_) -> None:
        for file in self.files.values():
            if kind is None:
                file.finish()
            else:
                file.file.close()
        if kind is None:
            extra = {"resize": resize_to_json(self.resize), "pixels": self.counts.to_json()}
            meta = {**self.meta, "classes": classes_to_json(self.classes), **extra}
            (self.folder / META).write_text(json.dumps(meta) + "\n")


def save_cache(path: Path, split: CachedSplit) -> None:
    """Write a split held in RAM as a cache folder at ``path``, atomically; ``native_ignore`` (if any)
    as ``native_ignore_*``."""
    native, ignore = split.native, split.native_ignore is not None
    canvas = split.images.shape[1:3]
    with atomic_path(path) as tmp, CacheWriter(tmp, canvas, ignore, split.classes, split.resize) as writer:
        for i, stem in enumerate(split.stems):
            writer.add(
                CacheRow(
                    stem,
                    split.breeds[i],
                    split.species[i],
                    split.images[i],
                    split.masks[i],
                    tuple(native.shapes[i]),
                    native.packed(i),
                    split.native_ignore.packed(i) if ignore else None,
                    tuple(split.sizes[i]),
                )
            )


def load_cache(path: Path) -> CachedSplit:
    """Open a split folder written by :class:`CacheWriter` (or :func:`save_cache`), its arrays
    memory-mapped read-only (np.memmap; writing to them raises ValueError). A cache without
    ``native_ignore_*`` arrays loads with ``native_ignore`` None. Raises UserError if ``path`` is
    missing, or is not such a folder or has a missing, truncated or inconsistent part (an .npz cache
    of an older petseg included)."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: cache not found; run `dvc repro preprocess`")
    try:
        meta = json.loads((path / META).read_text())
        arrays = {file.stem: np.load(file, mmap_mode="r", allow_pickle=False) for file in path.glob("*.npy")}
        classes = classes_from_json(meta["classes"])
        return CachedSplit(
            arrays["images"],
            arrays["masks"],
            meta["stems"],
            PackedMasks.from_arrays(arrays, "native", BINARY if classes.binary else LABELS),
            meta["breeds"],
            meta["species"],
            PackedMasks.from_arrays(arrays, "native_ignore") if "native_ignore_bits" in arrays else None,
            classes=classes,
            sizes=arrays["sizes"],
            resize=resize_from_json(meta["resize"]),
            counts=PixelCounts.from_json(meta["pixels"]),
        )
    except KeyError as err:
        raise UserError(f"{path}: not a petseg cache (no {err.args[0]}); run `dvc repro -f preprocess`") from None
    except (OSError, EOFError, ValueError, TypeError) as err:
        raise UserError(f"{path}: not a petseg cache ({first_line(err)}); run `dvc repro -f preprocess`") from None
