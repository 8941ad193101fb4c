"""Decoding one pair (pipeline/data/decode.py): trimap labels to masks under each boundary policy, palette
trimaps, photos in other formats behind a .jpg name, and the reason a bad pair is skipped for."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import UserError
from pipeline.data.decode import BadPair, decode_pair, load_pair, trimap_to_mask
from pipeline.data.layout import image_path, trimap_path
from pipeline.data.masks import IGNORE
from pipeline.data.report import BAD_TRIMAP_VALUES, MISSING_FILE, SIZE_MISMATCH, UNDECODABLE_IMAGE
from tests.support import TRIMAP

# --- trimap_to_mask ---------------------------------------------------------------------------


def test_trimap_to_mask_pet_policy_counts_boundary_as_pet():
    mask = trimap_to_mask(TRIMAP, "pet")
    expected = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [1, 0, 0, 0]], dtype=np.uint8)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected)


def test_trimap_to_mask_background_policy_counts_only_pet_as_pet():
    mask = trimap_to_mask(TRIMAP, "background")
    expected = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=np.uint8)
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected)


def test_trimap_to_mask_ignore_policy_marks_boundary_255():
    mask = trimap_to_mask(TRIMAP, "ignore")
    expected = np.array([[1, 1, 255, 0], [1, 255, 255, 0], [255, 0, 0, 0]], dtype=np.uint8)
    assert mask.dtype == np.uint8 and IGNORE == 255
    np.testing.assert_array_equal(mask, expected)


def test_trimap_to_mask_default_policy_is_pet():
    np.testing.assert_array_equal(trimap_to_mask(TRIMAP), trimap_to_mask(TRIMAP, "pet"))


def test_trimap_to_mask_does_not_modify_input():
    trimap = TRIMAP.copy()
    trimap_to_mask(trimap, "pet")
    np.testing.assert_array_equal(trimap, TRIMAP)


@pytest.mark.parametrize("bad", [0, 4, 255])
@pytest.mark.parametrize("boundary", ["pet", "background", "ignore"])
def test_trimap_to_mask_rejects_unexpected_values(bad, boundary):
    trimap = TRIMAP.copy()
    trimap[1, 1] = bad
    with pytest.raises(ValueError, match=str(bad)):
        trimap_to_mask(trimap, boundary)


def test_trimap_to_mask_rejects_unknown_policy():
    with pytest.raises(ValueError, match="boundary policy must be one of pet, background, ignore, got 'border'"):
        trimap_to_mask(TRIMAP, "border")


# --- palette trimaps ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "P"])
def test_a_trimap_keeps_its_label_values_grey_or_palette(tmp_path, mode):
    # A palette PNG stores the labels as indices; its colours (pet white, background black, boundary
    # grey) must not be what is read, as a conversion to luminance would do.
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "trimaps").mkdir(parents=True)
    stem = "Abyssinian_1"
    Image.new("RGB", (4, 3), (90, 60, 30)).save(image_path(tmp_path, stem), format="JPEG")
    trimap = Image.fromarray(TRIMAP, mode="L")
    if mode == "P":
        trimap = trimap.convert("P")  # same values, now palette indices
        trimap.putpalette([0, 0, 0, 255, 255, 255, 0, 0, 0, 128, 128, 128] + [0] * (252 * 3))
    trimap.save(trimap_path(tmp_path, stem))
    assert Image.open(trimap_path(tmp_path, stem)).mode == mode
    for boundary in ("pet", "background", "ignore"):
        image, mask = decode_pair(tmp_path, stem, boundary)
        assert image.mode == "RGB" and image.size == (4, 3)
        np.testing.assert_array_equal(mask, trimap_to_mask(TRIMAP, boundary))


def test_palette_trimap_keeps_its_label_values(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "trimaps").mkdir(parents=True)
    Image.new("RGB", (32, 32), (200, 100, 50)).save(tmp_path / "images" / "x.jpg")
    labels = np.full((32, 32), 2, np.uint8)
    labels[8:24, 8:24] = 1
    trimap = Image.fromarray(labels, mode="L").convert("P")
    # A palette whose colours have nothing to do with the indices: only the indices are labels.
    trimap.putpalette([255, 255, 255, 0, 0, 0, 10, 200, 10, 90, 90, 90] + [0] * 756)
    trimap.save(tmp_path / "annotations" / "trimaps" / "x.png")
    _, mask = load_pair(tmp_path, "x", 32, "pet")
    assert mask.sum() == 16 * 16 and mask[8:24, 8:24].all()


# --- load_pair on odd files ---------------------------------------------------------------------


def _pair_root(root: Path, stem: str, image: Image.Image, fmt: str, size=(40, 30)) -> Path:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    image.save(image_path(root, stem), format=fmt)
    trimap = np.full((size[1], size[0]), 2, np.uint8)
    trimap[5:25, 10:30] = 3
    trimap[8:22, 13:27] = 1
    Image.fromarray(trimap).save(trimap_path(root, stem))
    return root


def test_load_pair_png_with_alpha_named_jpg(tmp_path):
    rgba = np.zeros((30, 40, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 3] = 200, 50, 128
    root = _pair_root(tmp_path, "alpha", Image.fromarray(rgba, "RGBA"), "PNG")
    with Image.open(image_path(root, "alpha")) as img:
        assert img.format == "PNG" and img.mode == "RGBA"  # really a PNG behind the .jpg name

    image, mask = load_pair(root, "alpha", 32, "pet")

    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert mask.shape == (32, 32) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 1}
    np.testing.assert_array_equal(image[..., 0], 200)
    np.testing.assert_array_equal(image[..., 1], 50)


def test_load_pair_gif_named_jpg(tmp_path):
    rgb = np.zeros((30, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)
    rgb[:, 20:] = (0, 0, 255)
    root = _pair_root(tmp_path, "anim", Image.fromarray(rgb).convert("P"), "GIF")
    with Image.open(image_path(root, "anim")) as img:
        assert img.format == "GIF" and img.mode == "P"

    image, mask = load_pair(root, "anim", 64, "background")

    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    assert mask.shape == (64, 64) and mask.dtype == np.uint8
    assert set(np.unique(mask).tolist()) == {0, 1}
    np.testing.assert_array_equal(image[:, 0], np.tile([255, 0, 0], (64, 1)))
    np.testing.assert_array_equal(image[:, -1], np.tile([0, 0, 255], (64, 1)))


def test_load_pair_corrupt_image_raises_user_error_naming_file(tmp_path):
    root = _pair_root(tmp_path, "broken", Image.new("RGB", (40, 30)), "JPEG")
    image_path(root, "broken").write_bytes(np.random.default_rng(0).bytes(2048))
    with pytest.raises(BadPair, match="broken.jpg") as err:
        load_pair(root, "broken", 32, "pet")
    assert isinstance(err.value, UserError) and err.value.reason == UNDECODABLE_IMAGE


def test_load_pair_truncated_jpeg_raises_user_error_naming_file(tmp_path):
    noise = np.random.default_rng(1).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    root = _pair_root(tmp_path, "cut", Image.fromarray(noise), "JPEG")
    path = image_path(root, "cut")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(BadPair, match="cut.jpg") as err:
        load_pair(root, "cut", 32, "pet")
    assert err.value.reason == UNDECODABLE_IMAGE


def test_load_pair_missing_trimap_raises_user_error_naming_file(tmp_path):
    root = _pair_root(tmp_path, "lonely", Image.new("RGB", (40, 30)), "JPEG")
    trimap_path(root, "lonely").unlink()
    with pytest.raises(BadPair, match="lonely.png") as err:
        load_pair(root, "lonely", 32, "pet")
    assert err.value.reason == MISSING_FILE


def test_load_pair_bad_trimap_value_raises_user_error_naming_file(tmp_path):
    root = _pair_root(tmp_path, "odd", Image.new("RGB", (40, 30)), "JPEG")
    Image.fromarray(np.full((30, 40), 7, np.uint8)).save(trimap_path(root, "odd"))
    with pytest.raises(BadPair, match="odd.png") as err:
        load_pair(root, "odd", 32, "pet")
    assert err.value.reason == BAD_TRIMAP_VALUES


def test_a_trimap_of_another_size_than_its_photo_is_one_line(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "trimaps").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "x.jpg")
    Image.fromarray(np.full((30, 41), 2, np.uint8)).save(tmp_path / "annotations" / "trimaps" / "x.png")
    with pytest.raises(BadPair, match=r"x.png: trimap is 41x30 px but its image is 40x30") as err:
        load_pair(tmp_path, "x", 32, "pet")
    assert err.value.reason == SIZE_MISMATCH
