"""Behaviour the mutation run (docs/mutation.md) found untested in pipeline/data/dataset.py."""

import pytest
import torch
from torchvision import tv_tensors

from pipeline.core.params import AugmentOptions
from pipeline.data.dataset import train_transform
from pipeline.data.masks import IGNORE


def _draws(transform, image, mask, seed=0, n=16):
    torch.manual_seed(seed)
    return [transform(tv_tensors.Image(image), tv_tensors.Mask(mask)) for _ in range(n)]


def _left_right_pair(size=32):
    """An image black on the left half and white on the right; the mask is 1 on the right half."""
    mask = torch.zeros(1, size, size, dtype=torch.uint8)
    mask[..., size // 2 :] = 1
    return (mask * 255).expand(3, -1, -1).contiguous(), mask


@pytest.mark.parametrize("level", ["flip", "full"])
def test_the_default_flip_mirrors_left_right_and_never_upside_down(level):
    # The "full" default without its crop and jitter, so only the flip can change the picture.
    image, mask = _left_right_pair()
    transform = train_transform(32, level, AugmentOptions(crop_scale=(1.0, 1.0), jitter=0.0))
    outcomes = set()
    for out_image, out_mask in _draws(transform, image, mask):
        if torch.equal(out_mask, mask):
            assert torch.equal(out_image, image)
            outcomes.add("same")
        else:
            assert torch.equal(out_mask, mask.flip(-1)) and torch.equal(out_image, image.flip(-1))
            outcomes.add("mirrored")
    assert outcomes == {"same", "mirrored"}


def test_rotation_pads_the_image_with_black_and_the_mask_with_ignore():
    # A white photo, all background: after a rotation the corners outside the photo are exactly 0 in
    # the image and IGNORE in the mask; nothing else is black.
    image = torch.full((3, 32, 32), 255, dtype=torch.uint8)
    mask = torch.zeros(1, 32, 32, dtype=torch.uint8)
    transform = train_transform(32, "full", AugmentOptions(hflip=False, degrees=45, crop_scale=(1.0, 1.0), jitter=0.0))
    padded = 0
    for out_image, out_mask in _draws(transform, image, mask):
        black = (out_image == 0).all(0, keepdim=True)
        assert (out_mask[black] == IGNORE).all()
        padded += int(black.sum())
    assert padded > 0


def test_rotation_resamples_the_image_smoothly_and_the_mask_as_labels():
    # A sharp black/white edge turned by a random angle: bilinear resampling leaves grey pixels along
    # it in the image; the mask keeps only its own labels (and IGNORE outside the photo).
    image, mask = _left_right_pair()
    transform = train_transform(32, "full", AugmentOptions(hflip=False, degrees=30, crop_scale=(1.0, 1.0), jitter=0.0))
    for out_image, out_mask in _draws(transform, image, mask, n=8):
        grey = (out_image > 0) & (out_image < 255)
        assert grey.any()
        assert set(out_mask.unique().tolist()) <= {0, 1, IGNORE}
