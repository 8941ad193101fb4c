"""PyTorch view of a cached split: the geometric augmentation of image and mask (torchvision.transforms.v2)
on the loader's workers, and the colour jitter's random factors, which :mod:`pipeline.data.colour`
applies to whole batches on the training device.

Samples stay uint8 until they reach the device: a quarter of float32's bytes through the workers'
queues and the host-to-device copy, and the colour work runs batch-wise where the model runs.
"""

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from pipeline.core.constants import AUGMENT_LEVELS
from pipeline.core.params import AugmentOptions
from pipeline.data.colour import draw_jitter
from pipeline.data.geometry import Resize
from pipeline.data.masks import IGNORE

DEFAULT_OPTIONS = AugmentOptions()  # the original "full"


def train_transform(
    size: int, level: str, options: AugmentOptions = DEFAULT_OPTIONS, resize: Resize | None = None
) -> v2.Transform | None:
    """The train-time augmentation named ``level`` giving ``size``-pixel square images from photos cached at
    ``resize`` (None: squashed to ``size`` x ``size``).

    Squashed photos: "none" is no augmentation (returns None); "flip" a random horizontal flip; "full", in
    this order, the flips, rotation, and a random resized crop back to ``size`` pixels that ``options``
    switches on. Kept-aspect photos (``resize.mode`` "keep_aspect") are larger than ``size`` or of another
    shape, so every level ends in a random ``size`` crop, padded where the photo is smaller (image 0, mask
    :data:`IGNORE`); "full" rescales first by a random factor in ``options.scale`` (the short side becomes
    a uniform draw in [lo, hi) x ``resize.side``, mmsegmentation's ratio_range). The colour jitter of "full"
    is drawn by :class:`SegmentationDataset` and applied on the device (:func:`jitter_strength`). v2
    applies the geometric ops to image and mask alike (nearest-neighbour for the ``tv_tensors.Mask``).
    Outside a rotated image the image is 0 and the mask :data:`IGNORE`, so those pixels count in no loss.
    Raises ValueError for another level.
    """
    if level not in AUGMENT_LEVELS:
        raise ValueError(f"augmentation must be one of {', '.join(AUGMENT_LEVELS)}, got {level!r}")
    fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}
    crop = resize is not None and resize.mode == "keep_aspect"
    # Each op is built only when on: an op that is off draws no random numbers, so the defaults
    # replay the original transform exactly under the same seed.
    ops: list[v2.Transform] = []
    if level == "flip" or (level == "full" and options.hflip):
        ops.append(v2.RandomHorizontalFlip())
    if level == "full" and options.vflip:
        ops.append(v2.RandomVerticalFlip())
    if level == "full" and options.degrees:
        ops.append(v2.RandomRotation(options.degrees, interpolation=v2.InterpolationMode.BILINEAR, fill=fill))
    if level == "full" and not crop:
        ops.append(v2.RandomResizedCrop(size, scale=options.crop_scale, antialias=True))
    if level == "full" and crop:
        lo, hi = (max(1, round(f * resize.side)) for f in options.scale)
        ops.append(v2.RandomResize(lo, max(hi, lo + 1), antialias=True))
    if crop:
        ops.append(v2.RandomCrop(size, pad_if_needed=True, fill=fill))
    return v2.Compose(ops) if len(ops) > 1 else (ops[0] if ops else None)


def jitter_strength(level: str, options: AugmentOptions = DEFAULT_OPTIONS) -> float:
    """The colour jitter strength of augmentation ``level``: ``options.jitter`` for "full", else 0 (none)."""
    return options.jitter if level == "full" else 0.0


class SegmentationDataset(Dataset):
    """Items are (image uint8 (3, h, w), mask uint8 (1, h, w) in {0, 1, 255}, jitter float32 (6,)).

    ``images``: uint8 (N, H, W, 3); ``masks``: uint8 (N, H, W) in {0, 1, 255}, 255 = :data:`IGNORE`.
    Either may be a read-only memory map (:func:`pipeline.data.cache.load_cache`): it is kept as is, so
    DataLoader workers forked from this process share its pages, and each item is copied out of it alone.
    ``sizes`` (optional) int (N, 2): each image's (height, width) on its canvas, to which it is cropped
    before the transform, so that a random crop never lands in the padding; without it items are whole.
    ``repeats``: each image appears that many times an epoch (index i is image i mod N), each time with
    its own augmentation. ``transform`` (optional) is a v2 transform applied jointly to
    ``(tv_tensors.Image, tv_tensors.Mask)``. ``jitter`` > 0 draws, after the transform and from the
    same RNG, the item's colour jitter (:func:`pipeline.data.colour.draw_jitter`); 0 gives the
    identity. Raises ValueError if the lengths differ.
    """

    def __init__(
        self,
        images: np.ndarray,
        masks: np.ndarray,
        transform: v2.Transform | None = None,
        jitter: float = 0.0,
        sizes: np.ndarray | None = None,
        repeats: int = 1,
    ):
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images, self.masks, self.sizes, self.repeats = images, masks, sizes, repeats
        self.transform, self.jitter = transform, jitter

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        i %= len(self.images)
        height, width = self.images.shape[1:3] if self.sizes is None else self.sizes[i]
        # A copy of item i: torch cannot wrap a read-only mapping safely (a write would crash the process).
        image = torch.from_numpy(np.array(self.images[i, :height, :width])).permute(2, 0, 1)
        mask = torch.from_numpy(np.array(self.masks[i, :height, :width])).unsqueeze(0)
        image, mask = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor), draw_jitter(self.jitter)
