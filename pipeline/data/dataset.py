"""PyTorch view of a cached split, with joint image/mask augmentation (torchvision.transforms.v2)."""

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from pipeline.core.constants import AUGMENT_LEVELS
from pipeline.core.params import AugmentOptions
from pipeline.data.masks import IGNORE

# ImageNet channel statistics (torchvision model docs); the usual normalisation for natural photos.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


DEFAULT_OPTIONS = AugmentOptions()  # the original "full"


def train_transform(size: int, level: str, options: AugmentOptions = DEFAULT_OPTIONS) -> v2.Transform | None:
    """The train-time augmentation named ``level`` for ``size``-pixel square images.

    "none": no augmentation (returns None). "flip": random horizontal flip. "full", in this order:
    the flips, rotation, a random resized crop back to ``size`` pixels, and colour jitter that
    ``options`` switches on. v2 applies the geometric ops to image and mask alike
    (nearest-neighbour for the ``tv_tensors.Mask``) and the colour jitter to the image only. Outside
    a rotated image the image is 0 and the mask :data:`IGNORE`, so those pixels count in no loss.
    Raises ValueError for another level.
    """
    if level == "none":
        return None
    if level == "flip":
        return v2.RandomHorizontalFlip()
    if level != "full":
        raise ValueError(f"augmentation must be one of {', '.join(AUGMENT_LEVELS)}, got {level!r}")
    # Each op is built only when on: an op that is off draws no random numbers, so the defaults
    # replay the original transform exactly under the same seed.
    ops: list[v2.Transform] = []
    if options.hflip:
        ops.append(v2.RandomHorizontalFlip())
    if options.vflip:
        ops.append(v2.RandomVerticalFlip())
    if options.degrees:
        fill = {tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}
        ops.append(v2.RandomRotation(options.degrees, interpolation=v2.InterpolationMode.BILINEAR, fill=fill))
    ops.append(v2.RandomResizedCrop(size, scale=options.crop_scale, antialias=True))
    if options.jitter:
        ops.append(v2.ColorJitter(brightness=options.jitter, contrast=options.jitter, saturation=options.jitter))
    return v2.Compose(ops)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) or (3, H, W) in [0, 255] → float32 of the same shape, ImageNet-normalised."""
    mean = torch.tensor(MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(3, 1, 1)
    return (images.float() / 255.0 - mean) / std


class SegmentationDataset(Dataset):
    """Items are (image float32 (3, S, S) normalised, mask float32 (1, S, S) in {0., 1., 255.}).

    ``images``: uint8 (N, S, S, 3); ``masks``: uint8 (N, S, S) in {0, 1, 255}, 255 =
    :data:`IGNORE`, kept as 255. Either may be a read-only memory map (:func:`pipeline.data.cache.load_cache`):
    it is kept as is, so DataLoader workers forked from this process share its pages, and each item
    is copied out of it alone. ``transform`` (optional) is a v2 transform applied jointly to
    ``(tv_tensors.Image, tv_tensors.Mask)``. Raises ValueError if the lengths differ.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, transform: v2.Transform | None = None):
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images, self.masks = images, masks
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        # A copy of item i: torch cannot wrap a read-only mapping safely (a write would crash the process).
        image = torch.from_numpy(np.array(self.images[i])).permute(2, 0, 1)
        mask = torch.from_numpy(np.array(self.masks[i])).unsqueeze(0)
        image, mask = tv_tensors.Image(image), tv_tensors.Mask(mask)
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return normalize(image.as_subclass(torch.Tensor)), mask.as_subclass(torch.Tensor).float()
