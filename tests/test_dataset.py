import numpy as np
import pytest
import torch

from pipeline.dataset import MEAN, STD, SegmentationDataset, normalize, train_transform


def _aligned_pair(size=64):
    """An image that is white exactly where the mask is 1 (an off-centre square), black elsewhere."""
    mask = np.zeros((1, size, size), np.uint8)
    mask[0, 8:40, 4:28] = 1
    image = np.repeat(mask * 255, 3, axis=0)[None].transpose(0, 2, 3, 1)
    return image.astype(np.uint8), mask


@pytest.mark.parametrize("level", ["flip", "full"])
def test_augmentation_moves_image_and_mask_together(level):
    images, masks = _aligned_pair()
    ds = SegmentationDataset(images, masks, train_transform(64, level))
    torch.manual_seed(0)
    changed = 0
    for _ in range(20):
        image, mask = ds[0]
        assert image.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        bright = (image.mean(0, keepdim=True) > normalize(torch.full((3, 1, 1), 128, dtype=torch.uint8)).mean()).float()
        # Bilinear image vs nearest-neighbour mask may disagree only along the square's edges.
        assert (bright != mask).float().mean() < 0.03
        changed += not torch.equal(mask, torch.from_numpy(masks).float())
    assert changed > 0  # the transform is random, not the identity


def test_no_augmentation_returns_the_cached_pixels_normalised():
    images, masks = _aligned_pair()
    assert train_transform(64, "none") is None
    image, mask = SegmentationDataset(images, masks)[0]
    expected = (torch.from_numpy(images[0]).permute(2, 0, 1) / 255 - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(
        STD
    ).view(3, 1, 1)
    assert torch.allclose(image, expected)
    assert torch.equal(mask, torch.from_numpy(masks).float())


def test_unknown_augmentation_level_and_mismatched_lengths():
    with pytest.raises(ValueError, match="none, flip, full"):
        train_transform(64, "heavy")
    images, masks = _aligned_pair()
    with pytest.raises(ValueError, match="1 images but 2 masks"):
        SegmentationDataset(images, np.concatenate([masks, masks]))
