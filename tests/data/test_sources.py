"""Tests for pipeline/data/sources.py, classes.py and a folder dataset's split: the pets' tasks and a
user's folder of images and label masks, decoded into the cache's class indices."""

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import UserError
from pipeline.data.build import build_cache
from pipeline.data.classes import BINARY_PETS, Classes, classes_from_json, classes_to_json, read_classes_yaml
from pipeline.data.decode import BadPair, trimap_to_classes
from pipeline.data.masks import IGNORE
from pipeline.data.report import BAD_MASK_VALUES, MISSING_FILE, SIZE_MISMATCH, UNDECODABLE_MASK
from pipeline.data.sources import open_source
from pipeline.data.split import split_dataset
from pipeline.data.synthetic import make_synthetic_folder
from tests.support import TRIMAP

# A 3×4 label map of four classes with the user's ignore label 9 in one corner.
LABELS = np.array([[0, 1, 1, 9], [0, 2, 2, 3], [0, 0, 3, 3]], np.uint8)


def _folder(root, masks: dict[str, np.ndarray], classes_yaml: str, size=(4, 3), palette_mode=False):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.yaml").write_text(classes_yaml)
    for stem, mask in masks.items():
        Image.new("RGB", size, (10, 20, 30)).save(root / "images" / f"{stem}.png")
        img = Image.fromarray(mask, mode="L")
        if palette_mode:
            img = img.convert("P")  # values kept; the palette only colours them
            img.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
        img.save(root / "masks" / f"{stem}.png")
    return root


FOUR = "classes: [background, road, car, sign]\nignore_index: 9\n"


@pytest.mark.parametrize("palette_mode", [False, True], ids=["mode-L", "mode-P"])
def test_a_folder_mask_keeps_its_class_indices_and_maps_the_ignore_label_to_255(tmp_path, palette_mode):
    root = _folder(tmp_path / "d", {"a": LABELS}, FOUR, palette_mode=palette_mode)
    source = open_source(root, "auto", "pet")
    assert source.folder and source.classes.names == ("background", "road", "car", "sign")
    image, mask = source.decode("a")
    expected = LABELS.copy()
    expected[LABELS == 9] = IGNORE
    np.testing.assert_array_equal(mask, expected)
    assert image.size == (4, 3) and image.mode == "RGB"
    assert source.breed_species("a") == ("unknown", "unknown")


def test_a_folder_mask_with_a_value_outside_the_classes_or_another_size_is_a_bad_pair(tmp_path):
    bad = LABELS.copy()
    bad[0, 0] = 4  # class indices are 0..3; 9 is the ignore label
    root = _folder(tmp_path / "d", {"bad": bad, "ok": LABELS}, FOUR)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "small.png")
    Image.new("RGB", (4, 3)).save(root / "images" / "small.png")
    (root / "masks" / "broken.png").write_bytes(b"not a png")
    Image.new("RGB", (4, 3)).save(root / "images" / "broken.png")
    source = open_source(root, "auto", "pet")
    with pytest.raises(BadPair) as info:
        source.decode("bad")
    assert info.value.reason == BAD_MASK_VALUES and "values [4] outside the 4 classes" in str(info.value)
    assert "\n" not in str(info.value)
    reasons = {}
    for stem in ("small", "broken", "missing"):
        with pytest.raises(BadPair) as info:
            source.decode(stem)
        reasons[stem] = info.value.reason
    assert reasons == {"small": SIZE_MISMATCH, "broken": UNDECODABLE_MASK, "missing": MISSING_FILE}


def test_the_cache_of_a_folder_keeps_label_maps_and_skips_the_bad_pair(tmp_path):
    bad = LABELS.copy()
    bad[2, 3] = 7
    root = _folder(tmp_path / "d", {"a": LABELS, "b": LABELS[::-1].copy(), "bad": bad}, FOUR)
    split = build_cache(root, ["a", "b", "bad"], 32, "pet", progress=False)
    assert split.stems == ["a", "b"] and split.classes.count == 4
    native = split.truth(0)
    expected = LABELS.copy()
    expected[LABELS == 9] = IGNORE
    np.testing.assert_array_equal(native, expected)
    # Nearest-neighbour resizing keeps class indices: no value between two classes appears.
    assert set(np.unique(split.masks)) <= {0, 1, 2, 3, IGNORE}


def test_the_pets_trimap_task_reindexes_the_three_classes():
    np.testing.assert_array_equal(trimap_to_classes(np.array([[1, 2, 3]], np.uint8)), [[1, 0, 2]])
    classes = trimap_to_classes(TRIMAP)
    assert set(np.unique(classes)) <= {0, 1, 2}
    np.testing.assert_array_equal(classes == 2, TRIMAP == 3)


def test_two_classes_in_a_folder_make_a_binary_task(tmp_path):
    root = _folder(tmp_path / "d", {"a": (LABELS == 1).astype(np.uint8)}, "classes: [background, cell]\n")
    classes = open_source(root, "binary", "pet").classes
    assert classes.binary and classes.logits == 1
    split = build_cache(root, ["a"], 32, "pet", progress=False)
    assert split.classes.binary and set(np.unique(split.masks)) <= {0, 1}


@pytest.mark.parametrize("task", ["trimap", "binary"])
def test_a_folder_dataset_of_four_classes_refuses_a_pets_task_in_one_line(tmp_path, task):
    root = _folder(tmp_path / "d", {"a": LABELS}, FOUR)
    with pytest.raises(UserError, match=rf"task: {task} .* 4 classes .* set task: auto$") as info:
        open_source(root, task, "pet")
    assert "\n" not in str(info.value)
    assert open_source(root, "auto", "pet").classes.count == 4


def test_auto_makes_the_pets_binary(synthetic_root):
    assert open_source(synthetic_root, "auto", "pet").classes == open_source(synthetic_root, "binary", "pet").classes


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("classes: [only]\n", "at least two distinct names"),
        ("classes: [a, a]\n", "at least two distinct names"),
        ("classes: [a, b]\nignore_index: 1\n", "ignore_index must be a whole number from 2 to 255"),
        ("classes: [a, b]\npalette: [[0, 0, 0]]\n", "palette must be one [r, g, b]"),
        ("classes: [a, b]\ncolours: []\n", "unknown key colours"),
        ("classes: [a, b\n", "not valid YAML"),
    ],
)
def test_a_bad_classes_yaml_is_one_line_naming_the_file(tmp_path, text, problem):
    (tmp_path / "classes.yaml").write_text(text)
    with pytest.raises(UserError) as info:
        read_classes_yaml(tmp_path / "classes.yaml")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'classes.yaml'}: ") and problem in message and "\n" not in message


def test_classes_round_trip_through_json_with_a_default_palette():
    classes = Classes(("a", "b", "c"), 9)
    assert classes_from_json(classes_to_json(classes)) == classes
    assert len(classes.palette) == 3 and len(set(classes.palette)) == 3
    assert BINARY_PETS.names == ("background", "pet") and BINARY_PETS.ignore_index == IGNORE


def test_a_folder_without_splits_is_drawn_by_the_fractions_and_the_seed(tmp_path):
    make_synthetic_folder(tmp_path / "d", 20, seed=0, classes=4)
    a = split_dataset(tmp_path / "d", 0.25, 0.2, seed=1)
    b = split_dataset(tmp_path / "d", 0.25, 0.2, seed=1)
    c = split_dataset(tmp_path / "d", 0.25, 0.2, seed=2)
    assert (a.train, a.valid, a.test) == (b.train, b.valid, b.test)
    assert (len(a.test), len(a.valid), len(a.train)) == (4, 4, 12)
    assert sorted(a.train + a.valid + a.test) == sorted(f"shape_{i}" for i in range(20))
    assert a.test != c.test


def test_a_folder_with_splits_uses_its_lists(tmp_path):
    make_synthetic_folder(tmp_path / "d", 6, seed=0, classes=3)
    (tmp_path / "d" / "splits").mkdir()
    for name, stems in {"train": [0, 1, 2], "valid": [3], "test": [4, 5, 5]}.items():
        (tmp_path / "d" / "splits" / f"{name}.txt").write_text("".join(f"shape_{i}\n" for i in stems))
    split = split_dataset(tmp_path / "d", 0.5, 0.5, seed=0)
    assert (split.train, split.valid, split.test) == (
        ["shape_0", "shape_1", "shape_2"],
        ["shape_3"],
        ["shape_4", "shape_5"],
    )
    assert split.listed == {"train": 3, "valid": 1, "test": 3}
    assert [s.item for s in split.skipped["test"]] == ["shape_5"]


def test_the_default_palette_gives_every_one_of_many_classes_its_own_colour():
    classes = Classes(tuple(f"c{i}" for i in range(59)))  # CCP's 59 clothing classes
    assert len(set(classes.palette)) == 59 and (128, 128, 128) not in classes.palette
    assert classes.palette[:3] == ((0, 0, 0), (230, 159, 0), (86, 180, 233))  # Okabe & Ito first
    assert all(0 <= v <= 255 for colour in classes.palette for v in colour)
