"""Scale and aspect: the kept-aspect cache, the random crops that train on it, and their padding."""

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.core.params import AugmentOptions
from pipeline.data.build import build_cache
from pipeline.data.dataset import SegmentationDataset, train_transform
from pipeline.data.geometry import Resize, canvas, describe, pad, padded, resize_from_json, resize_to_json
from pipeline.data.masks import IGNORE


@pytest.mark.parametrize(
    ("shape", "resize", "expected"),
    [
        ((375, 500), Resize("keep_aspect", 128), (128, 171)),
        ((500, 375), Resize("keep_aspect", 128), (171, 128)),
        ((360, 480), Resize("keep_aspect", 360), (360, 480)),
        ((375, 500), Resize("square", 128), (128, 128)),
    ],
)
def test_a_photo_is_scaled_by_its_short_side_or_squashed(shape, resize, expected):
    assert resize.scaled(*shape) == expected
    assert resize_from_json(resize_to_json(resize)) == resize


def test_a_canvas_holds_every_size_rounded_up_to_32_and_pads_bottom_right():
    assert canvas([(128, 171), (171, 128)]) == (192, 192) and padded(32, 33) == (32, 64)
    padded_image = pad(np.ones((2, 3, 3), np.uint8), 4, 5, 0)
    assert padded_image.shape == (4, 5, 3) and padded_image[:2, :3].all() and not padded_image[2:].any()
    with pytest.raises(ValueError, match="cannot pad a 2x3 array to 1x5"):
        pad(np.ones((2, 3), np.uint8), 1, 5, 0)
    assert describe(Resize("keep_aspect", 96)) == "with a short side of 96 px"
    with pytest.raises(ValueError, match="resize must be one of square, keep_aspect"):
        Resize("crop", 96)


def _folder(root, shapes):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i, (h, w) in enumerate(shapes):
        image = np.full((h, w, 3), 40 * (i + 1), np.uint8)
        mask = np.zeros((h, w), np.uint8)
        mask[h // 4 : h // 2, w // 4 : w // 2] = 1 + i % 2
        Image.fromarray(image).save(root / "images" / f"p{i}.png")
        Image.fromarray(mask).save(root / "masks" / f"p{i}.png")
    (root / "classes.yaml").write_text("classes: [sky, pole, sign]\n")
    return root


def test_a_kept_aspect_cache_keeps_each_photos_shape_on_a_padded_canvas(tmp_path):
    root = _folder(tmp_path / "d", [(60, 90), (90, 60), (40, 40)])
    split = build_cache(root, ["p0", "p1", "p2"], Resize("keep_aspect", 32), "pet", progress=False)
    assert split.images.shape == (3, 64, 64, 3) and split.sizes.tolist() == [[32, 48], [48, 32], [32, 32]]
    for i, (h, w) in enumerate(split.sizes):
        assert split.photo(i).shape == (h, w, 3) and (split.photo(i) == 40 * (i + 1)).all()
        assert not split.images[i, h:].any() and not split.images[i, :, w:].any()  # padding: 0
        assert (split.masks[i, h:] == IGNORE).all() and (split.masks[i, :, w:] == IGNORE).all()
    assert split.native.shapes.tolist() == [[60, 90], [90, 60], [40, 40]]  # scored at the photos' own size
    # The padding is in no class's count: 32x48 + 48x32 + 32x32 labelled pixels.
    assert split.counts.pixels.sum() == 32 * 48 * 2 + 32 * 32


@pytest.mark.parametrize("level", ["none", "flip", "full"])
def test_a_random_crop_keeps_image_and_mask_aligned_and_pads_with_ignore(level):
    # A 40x72 photo on an 80x96 canvas, with a bright square drawn in the image and labelled 1 in the mask.
    images = np.zeros((1, 80, 96, 3), np.uint8)
    masks = np.full((1, 80, 96), IGNORE, np.uint8)
    masks[0, :40, :72] = 0
    images[0, 10:30, 20:44] = 255
    masks[0, 10:30, 20:44] = 1
    exact = AugmentOptions(scale=(1.0, 1.0))  # no rescale: crops move pixels, never blend them
    transform = train_transform(64, level, exact, Resize("keep_aspect", 40))
    data = SegmentationDataset(images, masks, transform, sizes=np.array([[40, 72]]), repeats=3)
    assert len(data) == 3
    for seed in range(20):
        torch.manual_seed(seed)
        image, mask, _ = data[seed % 3]
        assert image.shape == (3, 64, 64) and mask.shape == (1, 64, 64)
        bright = image[0] == 255
        assert torch.equal(bright, mask[0] == 1)  # the mask still covers the shape, and only it
        # Past the 40-pixel height the crop is padding: image 0, mask ignored, never the canvas's rows.
        assert ((mask[0] == IGNORE) == ((image == 0).all(0) & (mask[0] != 0))).all()
        assert (mask[0] == IGNORE).any() and (mask[0] == 0).any()


def test_a_rescaled_crop_keeps_the_shape_under_its_mask():
    images = np.zeros((1, 64, 64, 3), np.uint8)
    masks = np.zeros((1, 64, 64), np.uint8)
    images[0, 16:48, 16:48], masks[0, 16:48, 16:48] = 255, 1
    transform = train_transform(32, "full", AugmentOptions(jitter=0.0), Resize("keep_aspect", 64))
    data = SegmentationDataset(images, masks, transform, sizes=np.array([[64, 64]]))
    for seed in range(20):
        torch.manual_seed(seed)
        image, mask, _ = data[0]
        labelled = mask[0] == 1
        # Bilinear and nearest resampling differ by at most a pixel at the square's edge: inside the mask,
        # the image is bright except along that edge; outside, dark except along it.
        inner = labelled & torch.roll(labelled, 1, 0) & torch.roll(labelled, -1, 0)
        inner &= torch.roll(labelled, 1, 1) & torch.roll(labelled, -1, 1)
        assert (image[0][inner] > 200).all() and (image[0][~labelled & (mask[0] == 0)] < 200).float().mean() > 0.9


def test_a_kept_aspect_split_of_undecodable_photos_is_empty_not_an_error(tmp_path):
    root = _folder(tmp_path / "d", [(60, 90)])
    (root / "images" / "p0.png").write_bytes(b"not a png")
    split = build_cache(root, ["p0"], Resize("keep_aspect", 32), "pet", progress=False)
    assert len(split.stems) == 0 and split.images.shape == (0, 32, 32, 3) and split.skipped[0].item == "p0"
