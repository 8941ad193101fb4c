"""PyTorch view of a cached split, with joint image/mask augmentation (torchvision.transforms.v2)."""

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

# ImageNet channel statistics (torchvision model docs); the usual normalisation for natural photos.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


AUGMENTATIONS = ("none", "flip", "full")


def train_transform(size: int, level: str) -> v2.Transform | None:
    """The train-time augmentation named ``level`` for ``size``-pixel square images.

    "none": no augmentation (returns None). "flip": random horizontal flip. "full": flip, a random
    resized crop (50-100 % of the area) back to ``size`` pixels, and colour jitter. v2 applies the
    geometric ops to image and mask alike (nearest-neighbour for the ``tv_tensors.Mask``) and the
    colour jitter to the image only. Raises ValueError for another level.
    """
    if level == "none":
        return None
    if level == "flip":
        return v2.RandomHorizontalFlip()
    if level == "full":
        return v2.Compose(
            [
                v2.RandomHorizontalFlip(),
                v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True),
                v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2),
            ]
        )
    raise ValueError(f"augmentation must be one of {', '.join(AUGMENTATIONS)}, got {level!r}")


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 3, H, W) or (3, H, W) in [0, 255] → float32 of the same shape, ImageNet-normalised."""
    mean = torch.tensor(MEAN, device=images.device).view(3, 1, 1)
    std = torch.tensor(STD, device=images.device).view(3, 1, 1)
    return (images.float() / 255.0 - mean) / std


class SegmentationDataset(Dataset):
    """Items are (image float32 (3, S, S) normalised, mask float32 (1, S, S) in {0, 1}).

    ``images``: uint8 (N, S, S, 3); ``masks``: uint8 (N, S, S). ``transform`` (optional) is a v2
    transform applied jointly to ``(tv_tensors.Image, tv_tensors.Mask)``.
    """

    def __init__(self, images: np.ndarray, masks: np.ndarray, transform: v2.Transform | None = None):
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2)
        self.masks = torch.from_numpy(masks).unsqueeze(1)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = tv_tensors.Image(self.images[i]), tv_tensors.Mask(self.masks[i])
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return normalize(image.as_subclass(torch.Tensor)), mask.as_subclass(torch.Tensor).float()
