"""A folder dataset's file formats (pipeline/data/folder.py, decode.py): every accepted photo and mask suffix
in any letter case, 16-bit photos and masks, and a stem's one file, each decoded through the real Source."""

import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import UserError
from pipeline.data import folder
from pipeline.data.decode import BadPair
from pipeline.data.report import BAD_MASK_VALUES
from pipeline.data.sources import open_source
from pipeline.data.split import split_dataset

# A 3×4 photo of distinct colours and its label map of three classes.
PHOTO = np.arange(36, dtype=np.uint8).reshape(3, 4, 3) * 7
LABELS = np.array([[0, 1, 1, 2], [0, 2, 2, 1], [0, 0, 1, 2]], np.uint8)
THREE = "classes: [background, pet, car]\n"
# 16-bit values and their 8-bit pixels by hand: the high byte, v // 256 (255 → 0, 256 → 1, 32767 → 127,
# 32768 → 128, 65535 → 255, 40000 → 156); 129 → 0 where round(v * 255 / 65535) would give 1.
SIXTEEN = np.array([[0, 255, 256, 32767], [32768, 65535, 129, 40000]], np.uint16)
EIGHT = np.array([[0, 0, 1, 127], [128, 255, 0, 156]], np.uint8)


def _dataset(root, classes_yaml: str = THREE):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.yaml").write_text(classes_yaml)
    return root


def _decode(root, stem: str):
    image, mask = open_source(root, "auto", "pet").decode(stem)
    return np.asarray(image), mask


@pytest.mark.parametrize("name", ["a.tif", "a.tiff", "a.bmp", "a.webp", "IMG_1.TIF", "IMG_1.WebP", "a.PNG"])
def test_a_photo_of_each_lossless_suffix_in_any_case_decodes_to_its_pixels(tmp_path, name):
    root = _dataset(tmp_path / "d")
    stem = name.rsplit(".", 1)[0]
    Image.fromarray(PHOTO).save(root / "images" / name, lossless=True)  # lossless: only WebP reads it
    Image.fromarray(LABELS).save(root / "masks" / f"{stem}.png")
    image, mask = _decode(root, stem)
    np.testing.assert_array_equal(image, PHOTO)
    np.testing.assert_array_equal(mask, LABELS)


@pytest.mark.parametrize("name", ["IMG_1.JPG", "IMG_1.Jpeg"])
def test_an_upper_case_jpeg_is_found_and_decoded(tmp_path, name):
    root = _dataset(tmp_path / "d")
    flat = np.full((16, 16, 3), (200, 40, 90), np.uint8)  # one colour: JPEG keeps it within a level or two
    Image.fromarray(flat).save(root / "images" / name, quality=95)
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "masks" / "IMG_1.png")
    image, _ = _decode(root, "IMG_1")
    assert image.shape == (16, 16, 3) and np.abs(image.astype(int) - flat).max() <= 2


def _save_16bit(values: np.ndarray, path, mode: str) -> None:
    """``values`` as a one-channel 16-bit (or, mode "I", 32-bit) file of PIL mode ``mode``."""
    if mode == "I;16B":
        Image.frombytes(mode, values.shape[::-1], values.astype(">u2").tobytes()).save(path)
    else:
        Image.fromarray(values.astype(np.int32 if mode == "I" else np.uint16)).save(path)
    assert Image.open(path).mode == mode  # the mode this case is about


@pytest.mark.parametrize(("name", "mode"), [("a.png", "I;16"), ("a.tif", "I;16"), ("a.tiff", "I;16B"), ("a.TIF", "I")])
def test_a_16_bit_grey_photo_keeps_the_high_byte_repeated_in_each_channel(tmp_path, name, mode):
    root = _dataset(tmp_path / "d")
    _save_16bit(SIXTEEN, root / "images" / name, mode)
    Image.fromarray(np.zeros((2, 4), np.uint8)).save(root / "masks" / "a.png")
    image, _ = _decode(root, "a")
    assert image.dtype == np.uint8 and image.shape == (2, 4, 3)
    for channel in range(3):
        np.testing.assert_array_equal(image[..., channel], EIGHT)


def test_a_32_bit_photo_is_clipped_to_the_16_bit_range_first(tmp_path):
    root = _dataset(tmp_path / "d")
    Image.fromarray(np.array([[-5, 70000, 65535, 512]], np.int32)).save(root / "images" / "a.tif")
    Image.fromarray(np.zeros((1, 4), np.uint8)).save(root / "masks" / "a.png")
    image, _ = _decode(root, "a")
    np.testing.assert_array_equal(image[..., 0], [[0, 255, 255, 2]])


def _png_16bit_rgb(rgb: np.ndarray) -> bytes:
    """A 16-bit RGB PNG (colour type 2, PNG spec 11.2.2), which PIL cannot write."""
    height, width, _ = rgb.shape
    rows = b"".join(b"\0" + rgb[y].astype(">u2").tobytes() for y in range(height))  # filter type 0 a row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _tiff_16bit_rgb(rgb: np.ndarray) -> bytes:
    """A 16-bit RGB baseline TIFF (TIFF 6.0 section 6), little-endian, one uncompressed strip."""
    height, width, _ = rgb.shape
    pixels = rgb.astype("<u2").tobytes()
    # (tag, type, count, value): type 3 = SHORT, 4 = LONG; BitsPerSample's three SHORTs follow the IFD.
    tags = [(256, 3, 1, width), (257, 3, 1, height), (258, 3, 3, 0), (259, 3, 1, 1), (262, 3, 1, 2)]
    tags += [(273, 4, 1, 0), (277, 3, 1, 3), (278, 3, 1, height), (279, 4, 1, len(pixels)), (284, 3, 1, 1)]
    bits_at = 8 + 2 + 12 * len(tags) + 4
    offsets = {258: bits_at, 273: bits_at + 6}
    ifd = struct.pack("<H", len(tags))
    for tag, kind, count, value in tags:
        value = offsets.get(tag, value)
        field = struct.pack("<HH", value, 0) if kind == 3 and count == 1 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + field
    return b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + struct.pack("<3H", 16, 16, 16) + pixels


@pytest.mark.parametrize(("name", "write"), [("a.png", _png_16bit_rgb), ("a.tif", _tiff_16bit_rgb)])
def test_a_16_bit_colour_photo_follows_the_grey_rule(tmp_path, name, write):
    root = _dataset(tmp_path / "d")
    rgb = np.stack([SIXTEEN, SIXTEEN[::-1], np.full_like(SIXTEEN, 1000)], axis=-1)
    (root / "images" / name).write_bytes(write(rgb))
    Image.fromarray(np.zeros((2, 4), np.uint8)).save(root / "masks" / "a.png")
    image, _ = _decode(root, "a")
    np.testing.assert_array_equal(image, np.stack([EIGHT, EIGHT[::-1], np.full_like(EIGHT, 3)], axis=-1))


@pytest.mark.parametrize(
    ("name", "mode"), [("a.tif", "L"), ("a.TIFF", "L"), ("a.PNG", "L"), ("a.png", "I;16"), ("a.tif", "I;16")]
)
def test_a_mask_of_each_suffix_and_depth_keeps_its_class_indices(tmp_path, name, mode):
    root = _dataset(tmp_path / "d", THREE + "ignore_index: 7\n")
    labels = LABELS.copy()
    labels[0, 0] = 7
    Image.fromarray(PHOTO).save(root / "images" / "a.png")
    if mode == "L":
        Image.fromarray(labels).save(root / "masks" / name)
    else:
        _save_16bit(labels, root / "masks" / name, mode)
    _, mask = _decode(root, "a")
    expected = labels.copy()
    expected[0, 0] = 255  # the cache's ignore value
    assert mask.dtype == np.uint8
    np.testing.assert_array_equal(mask, expected)


@pytest.mark.parametrize("name", ["a.png", "a.tif"])
def test_a_16_bit_mask_value_of_256_or_more_is_a_bad_mask_value_not_wrapped_or_clipped(tmp_path, name):
    # Wrapped to uint8, 300 would be class 44; clipped, 255: the ignore index, silently dropped.
    root = _dataset(tmp_path / "d")
    labels = LABELS.astype(np.uint16)
    labels[1, 1] = 300
    Image.fromarray(PHOTO).save(root / "images" / "a.png")
    _save_16bit(labels, root / "masks" / name, "I;16")
    with pytest.raises(BadPair) as info:
        _decode(root, "a")
    assert info.value.reason == BAD_MASK_VALUES
    assert f"masks/{name}: mask has values [300] outside the 3 classes" in str(info.value)


@pytest.mark.parametrize(("first", "second"), [("images/a.jpg", "images/a.PNG"), ("masks/a.png", "masks/a.TIF")])
def test_a_stem_with_two_files_of_one_kind_fails_the_split_in_one_line_naming_both(tmp_path, first, second):
    root = _dataset(tmp_path / "d")
    for stem in "abc":
        Image.fromarray(PHOTO).save(root / "images" / f"{stem}.jpg")
        Image.fromarray(LABELS).save(root / "masks" / f"{stem}.png")
    Image.fromarray(PHOTO if second.startswith("images") else LABELS).save(root / second)
    folder_name, second_name = second.split("/")
    first_name = first.split("/")[1]
    kind = "photo" if folder_name == "images" else "mask"
    with pytest.raises(UserError) as info:
        split_dataset(root, 0.5, 1 / 3, seed=0)
    names = ", ".join(sorted([first_name, second_name]))
    assert str(info.value) == f"{root / folder_name}: a has 2 {kind}s ({names}); keep one file per stem"


def test_a_seeded_split_takes_the_masks_of_every_suffix_and_nothing_else(tmp_path):
    root = _dataset(tmp_path / "d")
    for name in ("a.png", "b.TIF", "c.tiff"):
        Image.fromarray(LABELS).save(root / "masks" / name)
        Image.fromarray(PHOTO).save(root / "images" / f"{name[0]}.JPEG")
    Image.fromarray(LABELS).save(root / "masks" / "d.jpg")  # lossy: not a mask
    (root / "masks" / "notes.txt").write_text("not a mask")
    (root / "masks" / "README").write_text("no suffix")
    (root / "masks" / "e.png").mkdir()  # a folder, not a file
    split = split_dataset(root, 0.5, 1 / 3, seed=0)
    assert sorted(split.train + split.valid + split.test) == ["a", "b", "c"]
    assert split.listed == {"masks": 3} and split.skipped == {"masks": []}


def test_a_stem_without_a_file_points_at_a_missing_jpg_or_png(tmp_path):
    root = _dataset(tmp_path / "d")
    (root / "images" / "a.txt").write_text("not a photo")
    assert folder.image_path(root, "a") == root / "images" / "a.jpg"
    assert folder.mask_path(root, "a") == root / "masks" / "a.png"
    assert folder.image_path(tmp_path / "nowhere", "a") == tmp_path / "nowhere" / "images" / "a.jpg"


def _settle(directory) -> None:
    """Date ``directory``'s mtime an hour back, as a folder extracted long before it is read."""
    old = os.stat(directory).st_mtime_ns - 3600 * 10**9
    os.utime(directory, ns=(old, old))


def test_a_settled_folder_is_listed_once_for_every_stem(tmp_path, monkeypatch):
    root = _dataset(tmp_path / "d")
    for i in range(20):
        (root / "images" / f"s{i}.{'JPG' if i % 2 else 'webp'}").touch()
    _settle(root / "images")
    listed = []
    scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: listed.append(path) or scandir(path))
    paths = [folder.image_path(root, f"s{i}") for i in range(20)]
    assert paths == [root / "images" / f"s{i}.{'JPG' if i % 2 else 'webp'}" for i in range(20)]
    assert listed == [root / "images"]
    # A file added changes the folder's mtime, so the next lookup lists it again and finds the file.
    (root / "images" / "new.bmp").touch()
    assert folder.image_path(root, "new") == root / "images" / "new.bmp" and len(listed) == 2


def test_a_folder_changed_within_its_mtime_tick_is_listed_again(tmp_path):
    root = _dataset(tmp_path / "d")
    (root / "images" / "a.png").touch()
    stat = os.stat(root / "images")
    assert folder.image_path(root, "b") == root / "images" / "b.jpg"
    (root / "images" / "b.tif").touch()
    # The coarse clock of the file system may give the changed folder the same mtime as before.
    os.utime(root / "images", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert folder.image_path(root, "b") == root / "images" / "b.tif"
