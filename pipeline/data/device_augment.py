"""The geometric augmentation on the training device, batch-wise (``train.augment_on: device``).

This module owns that path: the choice between it and the loader's workers (:func:`choose_augment_on`),
each sample's affine map drawn on the CPU from the sample's own seed (:func:`draw_affine`,
:class:`AffineDataset`), the train split kept on the device as uint8 (:class:`DeviceSplit`) and the batch
gathered and warped there with ``F.affine_grid`` + ``F.grid_sample`` (:class:`DeviceLoader`).

The random ops are :func:`pipeline.data.dataset.train_transform`'s own: each op of that transform draws its
parameters with its own torchvision code, in its order, from torch's CPU RNG under the sample's seed, and
becomes one affine map of pixel coordinates; their product maps every output pixel to the photo. So the
worker path and this one draw the same flips, angles, crops and rescales for a seed, and then the same
colour jitter (drawn after them, as :class:`~pipeline.data.dataset.SegmentationDataset` does); the pixels
differ by the resampling (one bilinear interpolation here, without the antialiasing of a downscale).
"""

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from pipeline.core.constants import CPU_AUGMENT_ON, DEVICE_SPLIT_SHARE
from pipeline.core.device import Choice
from pipeline.data.colour import draw_jitter
from pipeline.data.masks import IGNORE

# Images copied to the device at a time: bounds the host copy a read-only memory map needs.
COPY_CHUNK = 256


def choose_augment_on(setting: str, device_type: str, split_bytes: int, free_bytes: int | None) -> Choice:
    """Where the geometric augmentation runs (``value`` "device" or "workers") for the ``augment_on``
    setting, a train split of ``split_bytes`` bytes and ``free_bytes`` free on a "cuda" device (None
    elsewhere). "device" and "workers" are kept; "auto" is "device" on CUDA when the split takes at most
    :data:`~pipeline.core.constants.DEVICE_SPLIT_SHARE` of the free memory, else "workers", and
    :data:`~pipeline.core.constants.CPU_AUGMENT_ON` on a CPU. ``why`` says which and why, in one line."""
    if setting != "auto":
        return Choice(setting, f"augment_on: {setting} (asked)")
    if device_type != "cuda":
        return Choice(CPU_AUGMENT_ON, f"augment_on: {CPU_AUGMENT_ON} (auto: the faster on a CPU)")
    fits = split_bytes <= DEVICE_SPLIT_SHARE * free_bytes
    gib = f"{split_bytes / 2**30:.2f} GiB split, {free_bytes / 2**30:.1f} GiB free"
    return Choice("device" if fits else "workers", f"augment_on: {'device' if fits else 'workers'} (auto: {gib})")


def augment_on(setting: str, device: torch.device, split_bytes: int) -> Choice:
    """:func:`choose_augment_on` with the free memory of ``device`` (``torch.cuda.mem_get_info``) on CUDA."""
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else None
    return choose_augment_on(setting, device.type, split_bytes, free)


def _fake(height: int, width: int) -> list[torch.Tensor]:
    # What a v2 op's make_params reads of its inputs is their size: a zero-stride view costs no memory.
    return [torch.empty((), dtype=torch.uint8).expand(1, height, width)]


def _matrix(sx: float, sy: float, tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    """x -> sx x + tx, y -> sy y + ty, as a 3 x 3 matrix of homogeneous pixel coordinates."""
    return np.array([[sx, 0.0, tx], [0.0, sy, ty], [0.0, 0.0, 1.0]])


def _hflip(op, height, width):
    flip = torch.rand(1) < op.p  # v2's _RandomApplyTransform: skipped when rand >= p
    return (_matrix(-1.0, 1.0, width) if flip else np.eye(3)), (height, width)


def _vflip(op, height, width):
    flip = torch.rand(1) < op.p
    return (_matrix(1.0, -1.0, 0.0, height) if flip else np.eye(3)), (height, width)


def _rotation(op, height, width):
    # v2.functional.rotate turns the content counter-clockwise by `angle` about the image centre, keeping the
    # size; the output pixel at p shows the input's c + R(-angle) (p - c), y pointing down.
    angle = math.radians(op.make_params(_fake(height, width))["angle"])
    cos, sin = math.cos(angle), math.sin(angle)
    cx, cy = width / 2, height / 2
    turn = np.array([[cos, -sin, cx - cos * cx + sin * cy], [sin, cos, cy - sin * cx - cos * cy], [0.0, 0.0, 1.0]])
    return turn, (height, width)


def _resized_crop(op, height, width):
    box = op.make_params(_fake(height, width))
    out_h, out_w = op.size
    return _matrix(box["width"] / out_w, box["height"] / out_h, box["left"], box["top"]), (out_h, out_w)


def _resize(op, height, width):
    # v2.Resize with an int: the short side becomes `size` and the long side int(size * long / short).
    short = op.make_params(_fake(height, width))["size"][0]
    if height <= width:
        out_h, out_w = short, int(short * width / height)
    else:
        out_h, out_w = int(short * height / width), short
    return _matrix(width / out_w, height / out_h), (out_h, out_w)


def _crop(op, height, width):
    # The offsets are in the padded photo, whose pad_if_needed padding (left, top, ...) goes first.
    box = op.make_params(_fake(height, width))
    return _matrix(1.0, 1.0, box["left"] - box["padding"][0], box["top"] - box["padding"][1]), (
        box["height"],
        box["width"],
    )


# Each op of train_transform as the affine map from its output's pixel coordinates to its input's.
_AFFINES = {
    v2.RandomHorizontalFlip: _hflip,
    v2.RandomVerticalFlip: _vflip,
    v2.RandomRotation: _rotation,
    v2.RandomResizedCrop: _resized_crop,
    v2.RandomResize: _resize,
    v2.RandomCrop: _crop,
}


def draw_affine(transform: v2.Transform | None, height: int, width: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Draw ``transform``'s random parameters for a ``height`` x ``width`` photo, each op in its order with
    its own torchvision code from torch's CPU RNG, as the worker path draws them.

    ``transform`` is :func:`~pipeline.data.dataset.train_transform`'s (a Compose, one op, or None for none).
    Returns the float64 (3, 3) matrix from the output's pixel coordinates to the photo's (x right, y down,
    pixel i spanning [i, i + 1)) and the output's (height, width) in pixels.
    """
    ops = [] if transform is None else getattr(transform, "transforms", [transform])
    matrix, size = np.eye(3), (height, width)
    for op in ops:
        step, size = _AFFINES[type(op)](op, *size)
        matrix = matrix @ step
    return matrix, size


def normalised(matrix: np.ndarray, out: tuple[int, int], canvas: tuple[int, int]) -> np.ndarray:
    """``matrix`` (3, 3) from output pixels (an ``out`` (height, width) image) to a photo's pixels as the
    (2, 3) theta of ``F.affine_grid`` (align_corners False) sampling a ``canvas`` (height, width) array."""
    to_pixels = _matrix(out[1] / 2, out[0] / 2, out[1] / 2, out[0] / 2)
    to_canvas = _matrix(2 / canvas[1], 2 / canvas[0], -1.0, -1.0)
    return (to_canvas @ matrix @ to_pixels)[:2]


class AffineDataset(Dataset):
    """Items (index int, theta float32 (2, 3), jitter float32 (6,)): image ``index``'s augmentation as the
    :func:`normalised` map of :func:`draw_affine` on the canvas, then its colour jitter
    (:func:`~pipeline.data.colour.draw_jitter`, identity for ``jitter`` 0), both drawn from torch's CPU RNG
    (:class:`~pipeline.data.loader.SeededDataset` seeds it per sample).

    ``extents`` int (N, 2): each image's (height, width) on its ``canvas`` (height, width)
    (:func:`~pipeline.data.geometry.extents`); ``transform`` as :func:`draw_affine`; ``repeats`` as
    :class:`~pipeline.data.dataset.SegmentationDataset` (index i is image i mod N).
    """

    def __init__(
        self,
        extents: np.ndarray,
        canvas: tuple[int, int],
        transform: v2.Transform | None,
        jitter: float = 0.0,
        repeats: int = 1,
    ):
        self.extents, self.canvas, self.transform = np.asarray(extents).tolist(), canvas, transform
        self.jitter, self.repeats = jitter, repeats

    def __len__(self) -> int:
        return len(self.extents) * self.repeats

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        i %= len(self.extents)
        matrix, out = draw_affine(self.transform, *self.extents[i])
        theta = torch.from_numpy(normalised(matrix, out, self.canvas).astype(np.float32))
        return i, theta, draw_jitter(self.jitter)


@dataclass(frozen=True)
class DeviceSplit:
    """A train split on the training device: ``images`` uint8 (N, H, W, 3), ``masks`` uint8 (N, H, W) and
    ``extents`` int64 (N, 2), each image's (height, width) on the (H, W) canvas."""

    images: torch.Tensor
    masks: torch.Tensor
    extents: torch.Tensor

    @classmethod
    def copy(cls, images: np.ndarray, masks: np.ndarray, extents: np.ndarray, device: torch.device) -> "DeviceSplit":
        """``images`` uint8 (N, H, W, 3), ``masks`` uint8 (N, H, W) (read-only memory maps allowed) and
        ``extents`` int (N, 2) copied to ``device`` once, :data:`COPY_CHUNK` images at a time."""
        on = [torch.empty(a.shape, dtype=torch.uint8, device=device) for a in (images, masks)]
        for start in range(0, len(images), COPY_CHUNK):
            for array, target in zip((images, masks), on, strict=True):
                target[start : start + COPY_CHUNK] = torch.from_numpy(np.array(array[start : start + COPY_CHUNK]))
        return cls(*on, torch.tensor(np.asarray(extents, np.int64), device=device))  # a copy: extents may be read-only

    def warp(self, indices: torch.Tensor, theta: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``indices`` int (b,) warped by their ``theta`` float32 (b, 2, 3) (:class:`AffineDataset`) to
        ``size`` x ``size``: (images uint8 (b, 3, size, size), masks uint8 (b, 1, size, size)) on the device.

        Images are sampled bilinearly and rounded, masks by nearest neighbour; an output pixel whose source
        lies off its photo (outside its extent) is 0 in the image and :data:`IGNORE` in the mask, and one
        near the photo's edge repeats its border pixels, as a resize does, rather than blending in the canvas.
        """
        device, (height, width) = self.images.device, self.images.shape[1:3]
        # Pinned on CUDA by the loader, so these copies need not wait; no other value crosses to the device.
        indices = indices.to(device, non_blocking=True)
        grid = F.affine_grid(theta.to(device, non_blocking=True), [len(indices), 1, size, size], align_corners=False)
        # Each photo's far edge (x, y) in the canvas's normalised coordinates, (b, 1, 1, 2).
        spans = self.extents[indices].float()
        far = torch.stack([2 * spans[:, 1] / width - 1, 2 * spans[:, 0] / height - 1], -1).view(-1, 1, 1, 2)
        inside = ((grid >= -1) & (grid < far)).all(-1).unsqueeze(1)
        # Within the photo's outer pixel centres, so that its edge pixels repeat rather than blend with the canvas.
        x = grid[..., 0].clamp(min=-1 + 1 / width).minimum(far[..., 0] - 1 / width)
        y = grid[..., 1].clamp(min=-1 + 1 / height).minimum(far[..., 1] - 1 / height)
        grid = torch.stack([x, y], -1)
        images = self.images[indices].permute(0, 3, 1, 2).float()
        images = F.grid_sample(images, grid, mode="bilinear", align_corners=False).round()
        masks = F.grid_sample(self.masks[indices].unsqueeze(1).float(), grid, mode="nearest", align_corners=False)
        images = torch.where(inside, images, 0).to(torch.uint8)
        return images, torch.where(inside, masks, IGNORE).to(torch.uint8)


class DeviceLoader:
    """Training batches gathered and warped on the device, in the worker loader's form: (images uint8 (b, 3,
    S, S), masks uint8 (b, 1, S, S) on the device, jitter float32 (b, 6)), S = ``size``.

    ``loader`` is the seeded training loader (:func:`~pipeline.data.loader.make_train_loader`) of an
    :class:`AffineDataset` over ``split``: it yields each sample's index, theta and jitter, drawn on the
    CPU from the sample's own seed, so ``sampler`` (its :class:`~pipeline.data.loader.SeededSampler`) is the
    whole data-order and augmentation state, as on the worker path.
    """

    def __init__(self, split: DeviceSplit, loader: DataLoader, size: int):
        self.split, self.loader, self.size = split, loader, size

    @property
    def sampler(self):
        """The loader's :class:`~pipeline.data.loader.SeededSampler`."""
        return self.loader.sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for indices, theta, jitter in self.loader:
            yield *self.split.warp(indices, theta, self.size), jitter
