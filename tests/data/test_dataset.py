"""SegmentationDataset and the training augmentation (pipeline/data/dataset.py): image and mask move
together as uint8, ignored pixels stay 255, each item carries its colour jitter, and AugmentOptions
decide flips, rotation, crop and the jitter's strength."""

import numpy as np
import pytest
import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

from pipeline.data.colour import IDENTITY
from pipeline.data.dataset import AugmentOptions, SegmentationDataset, jitter_strength, train_transform
from pipeline.data.masks import IGNORE


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
        image, mask, _ = ds[0]
        assert image.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
        assert image.dtype == mask.dtype == torch.uint8
        assert set(mask.unique().tolist()) <= {0, 1}
        bright = (image.float().mean(0, keepdim=True) > 128).to(torch.uint8)
        # Bilinear image vs nearest-neighbour mask may disagree only along the square's edges.
        assert (bright != mask).float().mean() < 0.03
        changed += not torch.equal(mask, torch.from_numpy(masks))
    assert changed > 0  # the transform is random, not the identity


def test_no_augmentation_returns_the_cached_pixels_and_the_identity_jitter():
    images, masks = _aligned_pair()
    assert train_transform(64, "none") is None
    image, mask, jitter = SegmentationDataset(images, masks)[0]
    assert torch.equal(image, torch.from_numpy(images[0]).permute(2, 0, 1))
    assert torch.equal(mask, torch.from_numpy(masks))
    assert jitter.tolist() == list(IDENTITY)


def test_each_item_draws_its_jitter_after_its_geometry_from_the_same_seed():
    images, masks = _aligned_pair()
    ds = SegmentationDataset(images, masks, train_transform(64, "full"), jitter_strength("full"))
    draws = []
    for _ in range(2):
        torch.manual_seed(5)
        draws.append(ds[0])
    assert all(torch.equal(a, b) for a, b in zip(*draws, strict=True))  # the item is a function of the seed
    factors, order = draws[0][2][:3], draws[0][2][3:]
    assert ((factors >= 0.8) & (factors <= 1.2)).all() and sorted(order.tolist()) == [0, 1, 2]
    torch.manual_seed(5)
    geometry = train_transform(64, "full")(
        tv_tensors.Image(torch.from_numpy(images[0]).permute(2, 0, 1)), tv_tensors.Mask(torch.from_numpy(masks))
    )
    assert torch.equal(draws[0][0], geometry[0]) and torch.equal(draws[0][1], geometry[1])
    assert jitter_strength("flip") == jitter_strength("none") == 0.0


def test_unknown_augmentation_level_and_mismatched_lengths():
    with pytest.raises(ValueError, match="none, flip, full"):
        train_transform(64, "heavy")
    images, masks = _aligned_pair()
    with pytest.raises(ValueError, match="1 images but 2 masks"):
        SegmentationDataset(images, np.concatenate([masks, masks]))


# --- AugmentOptions ------------------------------------------------------------------------------


def _original_full(size):
    """The geometric ops of the "full" transform as it was before AugmentOptions, copied: the defaults
    must replay them (its colour jitter, drawn after them, is now drawn by the dataset)."""
    return v2.Compose([v2.RandomHorizontalFlip(), v2.RandomResizedCrop(size, scale=(0.5, 1.0), antialias=True)])


def _draws(transform, image, mask, n, seed=0):
    """``n`` (image, mask) outputs of ``transform`` on the uint8 tensors ``image`` (3, H, W) and ``mask``
    (1, H, W), after seeding torch with ``seed``."""
    torch.manual_seed(seed)
    return [transform(tv_tensors.Image(image), tv_tensors.Mask(mask)) for _ in range(n)]


def test_default_options_replay_the_original_full_geometry_exactly():
    images, masks = _aligned_pair()
    image, mask = torch.from_numpy(images[0]).permute(2, 0, 1), torch.from_numpy(masks)
    expected = _draws(_original_full(64), image, mask, 6, seed=3)
    for transform in (train_transform(64, "full"), train_transform(64, "full", AugmentOptions())):
        for (i1, m1), (i2, m2) in zip(_draws(transform, image, mask, 6, seed=3), expected, strict=True):
            assert torch.equal(i1, i2) and torch.equal(m1, m2)


def _three_class_pair(size=64):
    """Mask 1 (pet) on a big off-centre block, 255 on another, 0 elsewhere; the image is red where the
    mask is 1, green where it is 0 and blue where it is 255 (so black is only the rotation's padding)."""
    mask = np.zeros((1, size, size), np.uint8)
    mask[0, 6:38, 10:42] = 1
    mask[0, 44:60, 4:24] = IGNORE
    image = np.zeros((3, size, size), np.uint8)
    image[0] = (mask[0] == 1) * 255
    image[1] = (mask[0] == 0) * 255
    image[2] = (mask[0] == IGNORE) * 255
    return torch.from_numpy(image), torch.from_numpy(mask)


def _colour_class(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) → (1, H, W) mask the colours encode: red 1, green 0, anything else (blue, black) 255."""
    red, green = image[0] > 128, image[1] > 128
    out = torch.full(image.shape[1:], IGNORE, dtype=torch.uint8)
    out[green & ~red] = 0
    out[red & ~green] = 1
    return out[None]


def _interior(mask: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """Pixels whose (2 radius + 1)² neighbourhood lies in the picture and has one mask value: there
    bilinear (image) and nearest (mask) resampling must agree. (Just outside the picture may be the
    rotation's padding, which the image blends in and the mask does not show.)"""
    m = torch.nn.functional.pad(mask.float()[None], (radius,) * 4, value=-1.0)
    k = 2 * radius + 1
    hi = torch.nn.functional.max_pool2d(m, k, 1)
    lo = -torch.nn.functional.max_pool2d(-m, k, 1)
    return (hi == lo)[0]


def test_rotation_flips_and_crop_keep_mask_and_image_aligned_and_pad_with_ignore():
    image, mask = _three_class_pair()
    options = AugmentOptions(vflip=True, degrees=30, crop_scale=(0.6, 1.0))
    transform = train_transform(64, "full", options)
    torch.manual_seed(0)
    padded = 0
    for _ in range(20):
        out_image, out_mask = transform(tv_tensors.Image(image), tv_tensors.Mask(mask))
        assert out_image.shape == (3, 64, 64) and out_mask.shape == (1, 64, 64)
        assert set(out_mask.unique().tolist()) <= {0, 1, IGNORE}
        interior = _interior(out_mask)
        assert interior.float().mean() > 0.4  # the check below is not vacuous
        colours = _colour_class(out_image.as_subclass(torch.Tensor))
        assert torch.equal(colours[interior], out_mask.as_subclass(torch.Tensor)[interior])
        padded += ((out_image < 64).all(0) & interior[0]).sum().item()  # outside the rotated photo
    assert padded > 0


def test_dataset_returns_ignore_as_255_through_augmentation():
    image, mask = _three_class_pair()
    images, masks = image.permute(1, 2, 0)[None].numpy(), mask.numpy()
    plain = SegmentationDataset(images, masks)[0][1]
    assert plain.dtype == torch.uint8 and torch.equal(plain, mask)
    ds = SegmentationDataset(images, masks, train_transform(64, "full", AugmentOptions(degrees=20)))
    torch.manual_seed(1)
    kept = 0
    for _ in range(10):
        _, out, _ = ds[0]
        assert out.dtype == torch.uint8 and out.shape == (1, 64, 64)
        assert set(out.unique().tolist()) <= {0, 1, 255}
        kept += bool((out == 255).any())
    assert kept > 0  # a crop may leave out the 255 block and the padding, but not every time


def test_vflip_flips_vertically_and_hflip_can_be_off():
    image, mask = _three_class_pair()
    transform = train_transform(64, "full", AugmentOptions(hflip=False, vflip=True, crop_scale=(1.0, 1.0), jitter=0))
    outcomes = set()
    for out_image, out_mask in _draws(transform, image, mask, 12):
        if torch.equal(out_mask, mask):
            assert torch.equal(out_image, image)
            outcomes.add("same")
        else:
            assert torch.equal(out_mask, mask.flip(-2)) and torch.equal(out_image, image.flip(-2))
            outcomes.add("upside down")
    assert outcomes == {"same", "upside down"}


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
    for out_image, out_mask in _draws(transform, image, mask, 16):
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
    for out_image, out_mask in _draws(transform, image, mask, 16):
        black = (out_image == 0).all(0, keepdim=True)
        assert (out_mask[black] == IGNORE).all()
        padded += int(black.sum())
    assert padded > 0


def test_rotation_resamples_the_image_smoothly_and_the_mask_as_labels():
    # A sharp black/white edge turned by a random angle: bilinear resampling leaves grey pixels along
    # it in the image; the mask keeps only its own labels (and IGNORE outside the photo).
    image, mask = _left_right_pair()
    transform = train_transform(32, "full", AugmentOptions(hflip=False, degrees=30, crop_scale=(1.0, 1.0), jitter=0.0))
    for out_image, out_mask in _draws(transform, image, mask, 8):
        grey = (out_image > 0) & (out_image < 255)
        assert grey.any()
        assert set(out_mask.unique().tolist()) <= {0, 1, IGNORE}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"crop_scale": (0.0, 1.0)}, "crop_scale"),
        ({"crop_scale": (0.8, 0.5)}, "crop_scale"),
        ({"crop_scale": (0.5, 1.2)}, "crop_scale"),
        ({"crop_scale": (0.5,)}, "crop_scale"),
        ({"degrees": -1}, "degrees"),
        ({"degrees": 181}, "degrees"),
        ({"jitter": -0.1}, "jitter"),
        ({"jitter": float("nan")}, "jitter"),
    ],
)
def test_augment_options_reject_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentOptions(**kwargs)


def test_augment_options_accept_a_list_for_crop_scale_and_the_edges():
    options = AugmentOptions(crop_scale=[0.3, 0.3], degrees=180, jitter=0)
    assert options.crop_scale == (0.3, 0.3)
    hash(options)  # frozen and hashable, even from a YAML list
