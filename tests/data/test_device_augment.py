"""The augmentation on the device (pipeline/data/device_augment.py): a square drawn in image and mask moves
as each op says, image and mask stay aligned, pixels off the photo are 0 / ignore, the draws are the worker
path's for a seed, batches repeat for a seed and do not depend on their neighbours, and `auto` decides by
the free memory."""

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from pipeline.core.constants import CPU_AUGMENT_ON
from pipeline.core.params import AugmentOptions
from pipeline.data import device_augment
from pipeline.data.dataset import SegmentationDataset, train_transform
from pipeline.data.device_augment import (
    AffineDataset,
    DeviceLoader,
    DeviceSplit,
    augment_on,
    choose_augment_on,
    draw_affine,
)
from pipeline.data.geometry import Resize, extents
from pipeline.data.loader import make_train_loader
from pipeline.data.masks import IGNORE

CPU = torch.device("cpu")


def _squares(n=3, height=48, width=64):
    """n photos, white exactly where their mask is 1 (an off-centre square), black elsewhere."""
    masks = np.zeros((n, height, width), np.uint8)
    masks[:, 8:24, 12:28] = 1
    return np.repeat(masks[..., None] * 255, 3, axis=-1), masks


def _warp(transform, images, masks, sizes=None, size=None, seed=0, index=0):
    """Image ``index`` through the device path under ``seed``: (image uint8 (3, S, S), mask uint8 (1, S, S))."""
    spans = extents(images.shape, sizes)
    ds = AffineDataset(spans, images.shape[1:3], transform)
    torch.manual_seed(seed)
    i, theta, _ = ds[index]
    image, mask = DeviceSplit.copy(images, masks, spans, CPU).warp(torch.tensor([i]), theta[None], size)
    return image[0], mask[0]


def _aligned(image, mask):
    """Photo pixels are white where the mask is 1 and black where 0 (bar the square's bilinear edges);
    pixels off the photo are 0 in the image exactly where the mask is IGNORE."""
    off = mask[0] == IGNORE
    assert (image[:, off] == 0).all()
    bright = image.float().mean(0) > 128
    assert (bright[~off] != (mask[0][~off] == 1)).float().mean() < 0.03


def test_a_flip_mirrors_image_and_mask_exactly():
    images, masks = _squares(height=64)
    image, mask = _warp(v2.RandomHorizontalFlip(p=1.0), images, masks, size=64)
    assert torch.equal(mask[0], torch.from_numpy(masks[0][:, ::-1].copy()))
    assert torch.equal(image, torch.from_numpy(images[0][:, ::-1].copy()).permute(2, 0, 1))
    image, mask = _warp(v2.RandomVerticalFlip(p=1.0), images, masks, size=64)
    assert torch.equal(mask[0], torch.from_numpy(masks[0][::-1].copy()))


def test_a_quarter_turn_turns_the_square_counter_clockwise_as_torchvision_does():
    images, masks = _squares(height=64)
    image, mask = _warp(v2.RandomRotation((90, 90)), images, masks, size=64)
    assert torch.equal(mask[0], torch.from_numpy(masks[0]).rot90(1))
    assert torch.equal(image, torch.from_numpy(images[0]).permute(2, 0, 1).rot90(1, (1, 2)))


def test_a_rotation_pads_with_black_and_ignore_and_keeps_the_pair_aligned():
    images, masks = _squares(height=64)
    image, mask = _warp(v2.RandomRotation((30, 30)), images, masks, size=64)
    reference = v2.functional.rotate(torch.from_numpy(masks[:1]), 30, fill=IGNORE)  # nearest, as for masks
    assert (mask == reference).float().mean() > 0.99
    assert (mask == IGNORE).any() and (mask == 1).any()
    _aligned(image, mask)


def test_a_resized_crop_enlarges_the_square_by_the_crop_factor():
    # A crop of half the side at (0, 0) doubles the square: rows 8..24, columns 12..28 become 16..48, 24..56.
    images, masks = _squares(height=64)
    crop = v2.RandomResizedCrop(64, scale=(0.25, 0.25), ratio=(1.0, 1.0))
    crop.make_params = lambda inputs: dict(top=0, left=0, height=32, width=32)
    image, mask = _warp(crop, images, masks, size=64)
    expected = torch.zeros(64, 64, dtype=torch.uint8)
    expected[16:48, 24:56] = 1
    assert torch.equal(mask[0], expected)
    _aligned(image, mask)


def test_a_kept_aspect_crop_past_a_small_photo_pads_with_black_and_ignore():
    # Photo 1 takes 40 x 48 of its 48 x 64 canvas; rescaled to a short side of 20 it is 20 x 24 and lies in a
    # 32 x 32 crop with ignore around it, never the canvas's padding (white here, to show).
    images, masks = _squares(2)
    images[1, 40:], masks[1, 40:] = 255, 1
    sizes = np.array([[48, 64], [40, 48]])
    transform = train_transform(32, "full", AugmentOptions(hflip=False, scale=(0.5, 0.5)), Resize("keep_aspect", 40))
    for seed in range(5):
        image, mask = _warp(transform, images, masks, sizes, size=32, seed=seed, index=1)
        assert mask.shape == (1, 32, 32) and (mask != IGNORE).sum() == 20 * 24
        assert (mask == 1).sum() == 8 * 8  # the square at half its size
        _aligned(image, mask)


@pytest.mark.parametrize(
    ("options", "resize", "agree"),
    [
        (AugmentOptions(vflip=True), None, 1.0),  # flips only: the very pixels of the worker path
        (AugmentOptions(degrees=30, vflip=True), None, 0.97),
        # torchvision resizes a mask by floor(x * scale), half a pixel off the centres sampled here, so on
        # this 32-pixel crop the edges of the square and of the rotated corners move by a pixel.
        (AugmentOptions(degrees=20), Resize("keep_aspect", 40), 0.9),
    ],
)
def test_the_draws_are_the_worker_paths_for_a_seed(options, resize, agree):
    images, masks = _squares()
    sizes = None if resize is None else np.array([[48, 64], [40, 48], [48, 40]])
    options = options.model_copy(update=dict(crop_scale=(1.0, 1.0))) if agree == 1.0 else options
    transform = train_transform(32 if resize else 48, "full", options, resize)
    if resize is None:
        images, masks = images[:, :, :48], masks[:, :, :48]
    workers = SegmentationDataset(images, masks, transform, 0.2, sizes)
    spans = extents(images.shape, sizes)
    ds, split = AffineDataset(spans, images.shape[1:3], transform, 0.2), DeviceSplit.copy(images, masks, spans, CPU)
    for seed in range(6):
        torch.manual_seed(seed)
        _, reference, jitter = workers[seed % 3]
        torch.manual_seed(seed)
        i, theta, own_jitter = ds[seed % 3]
        mask = split.warp(torch.tensor([i]), theta[None], reference.shape[-1])[1][0]
        assert torch.equal(own_jitter, jitter)  # drawn after the geometry: the same RNG state
        assert (mask == reference).float().mean() >= agree


def _batches(ds, split, batch_size, seed=0):
    loader = make_train_loader(ds, batch_size, seed, num_workers=0, device_type="cpu")
    order = [i for i, _ in loader.sampler]
    batches = list(DeviceLoader(split, loader, 32))
    return order, [torch.cat(part) for part in zip(*batches, strict=True)]


def test_batches_repeat_for_a_seed_and_each_sample_ignores_its_batch():
    images, masks = _squares(6)
    transform = train_transform(32, "full", AugmentOptions(vflip=True, degrees=15))
    spans = extents(images.shape, None)
    ds, split = AffineDataset(spans, (48, 64), transform, 0.2), DeviceSplit.copy(images, masks, spans, CPU)
    order, first = _batches(ds, split, 2)
    _, again = _batches(ds, split, 2)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    # One batch of all six: the same samples in the same order, each warped as in its batch of two.
    whole_order, whole = _batches(ds, split, 6)
    assert whole_order == order and all(torch.equal(a, b) for a, b in zip(first, whole, strict=True))
    assert first[0].shape == (6, 3, 32, 32) and first[1].shape == (6, 1, 32, 32) and first[2].shape == (6, 6)
    _, other = _batches(ds, split, 2, seed=1)
    assert not torch.equal(first[1], other[1])


def test_no_augmentation_is_the_identity():
    images, masks = _squares()
    assert np.array_equal(draw_affine(None, 48, 64)[0], np.eye(3))
    image, mask = _warp(None, images[:, :, :48], masks[:, :, :48], size=48)
    assert torch.equal(image, torch.from_numpy(images[0, :, :48]).permute(2, 0, 1))
    assert torch.equal(mask[0], torch.from_numpy(masks[0, :, :48]))


@pytest.mark.parametrize(
    ("setting", "device", "split", "free", "value"),
    [
        ("device", "cpu", 10, None, "device"),
        ("workers", "cuda", 10, 100, "workers"),
        ("auto", "cuda", 25, 100, "device"),
        ("auto", "cuda", 26, 100, "workers"),
        ("auto", "cpu", 1, None, CPU_AUGMENT_ON),
    ],
)
def test_auto_puts_the_split_on_the_gpu_when_a_quarter_of_its_free_memory_holds_it(setting, device, split, free, value):
    choice = choose_augment_on(setting, device, split, free)
    assert choice.value == value and choice.why.startswith(f"augment_on: {value} (")


def test_augment_on_reads_the_free_memory_of_a_cuda_device(monkeypatch):
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (4 * 2**30, 80 * 2**30))
    assert augment_on("auto", torch.device("cuda"), 2**30).value == "device"
    assert augment_on("auto", torch.device("cuda"), 2 * 2**30).value == "workers"
    assert augment_on("auto", CPU, 2 * 2**30).value == device_augment.CPU_AUGMENT_ON
