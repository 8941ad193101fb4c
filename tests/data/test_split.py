"""make_split: the train/valid/test lists from the official list files, reproducible for a seed, skipping
listed pairs whose files are missing; a folder dataset's splits/ (all three files, val.txt for valid.txt)."""

import shutil
from pathlib import Path

import pytest

from pipeline.core.errors import UserError
from pipeline.data.layout import image_path, read_stems, trimap_path
from pipeline.data.report import MISSING_FILE
from pipeline.data.split import make_split, split_dataset
from pipeline.data.synthetic import make_synthetic_folder


def _stub_dataset(root: Path, n_trainval: int, n_test: int) -> Path:
    """Official layout with empty image/trimap files: enough for make_split, which only checks files exist."""
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    trainval = [f"pet_{i:03d}" for i in range(n_trainval)]
    test = [f"pet_{i:03d}" for i in range(n_trainval, n_trainval + n_test)]
    for stem in trainval + test:
        image_path(root, stem).touch()
        trimap_path(root, stem).touch()
    header = "#Image CLASS-ID SPECIES BREED ID\n"
    (root / "annotations" / "trainval.txt").write_text("".join(f"{s} 1 2 1\n" for s in trainval))
    (root / "annotations" / "test.txt").write_text("".join(f"{s} 1 2 1\n" for s in test))
    (root / "annotations" / "list.txt").write_text(header + "".join(f"{s} 1 2 1\n" for s in trainval + test))
    return root


@pytest.fixture(scope="module")
def stub_root(tmp_path_factory) -> Path:
    return _stub_dataset(tmp_path_factory.mktemp("stub"), n_trainval=120, n_test=30)


def test_make_split_same_seed_gives_identical_lists(stub_root):
    a = make_split(stub_root, 0.2, seed=7)
    b = make_split(stub_root, 0.2, seed=7)
    assert (a.train, a.valid, a.test) == (b.train, b.valid, b.test)


def test_make_split_different_seed_gives_different_valid_set(stub_root):
    a = make_split(stub_root, 0.2, seed=7)
    b = make_split(stub_root, 0.2, seed=8)
    assert len(a.valid) == len(b.valid)
    assert set(a.valid) != set(b.valid)


@pytest.mark.parametrize("fraction", [0.1, 0.2, 0.33, 0.5, 0.9])
def test_make_split_valid_size_train_valid_partition_and_test(stub_root, fraction):
    trainval = read_stems(stub_root / "annotations" / "trainval.txt")
    test = read_stems(stub_root / "annotations" / "test.txt")
    split = make_split(stub_root, fraction, seed=0)
    assert len(split.valid) == round(fraction * len(trainval))
    assert not set(split.train) & set(split.valid)
    assert sorted(split.train + split.valid) == sorted(trainval)
    assert sorted(split.test) == sorted(test)
    assert split.skipped == {"trainval": [], "test": []}
    assert split.listed == {"trainval": len(trainval), "test": len(test)}


def test_make_split_on_synthetic_dataset(synthetic_root):
    trainval = read_stems(synthetic_root / "annotations" / "trainval.txt")
    split = make_split(synthetic_root, 0.25, seed=0)
    assert len(split.valid) == round(0.25 * len(trainval))
    assert sorted(split.train + split.valid) == sorted(trainval)
    assert sorted(split.test) == sorted(read_stems(synthetic_root / "annotations" / "test.txt"))


def test_make_split_skips_and_counts_stems_without_files(synthetic_root, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(synthetic_root, root)
    trainval = read_stems(root / "annotations" / "trainval.txt")
    test = read_stems(root / "annotations" / "test.txt")
    no_image, no_trimap, no_test_trimap = trainval[0], trainval[1], test[0]
    image_path(root, no_image).unlink()
    trimap_path(root, no_trimap).unlink()
    trimap_path(root, no_test_trimap).unlink()

    split = make_split(root, 0.25, seed=0)

    assert {name: [(s.item, s.reason) for s in entries] for name, entries in split.skipped.items()} == {
        "trainval": [(no_image, MISSING_FILE), (no_trimap, MISSING_FILE)],
        "test": [(no_test_trimap, MISSING_FILE)],
    }
    # The detail names the file that is missing, not just the stem.
    assert split.skipped["trainval"][0].detail.startswith(f"{image_path(root, no_image)}: file not found")
    assert split.skipped["trainval"][1].detail.startswith(f"{trimap_path(root, no_trimap)}: file not found")
    assert split.listed == {"trainval": len(trainval), "test": len(test)}
    kept = split.train + split.valid + split.test
    for stem in (no_image, no_trimap, no_test_trimap):
        assert stem not in kept
    assert sorted(split.train + split.valid) == sorted(set(trainval) - {no_image, no_trimap})
    assert sorted(split.test) == sorted(set(test) - {no_test_trimap})
    assert len(split.valid) == round(0.25 * (len(trainval) - 2))


def test_make_split_raises_when_a_split_would_be_empty(stub_root):
    with pytest.raises(UserError, match="valid"):
        make_split(stub_root, 0.0, seed=0)


# A folder dataset's splits/: stems of make_synthetic_folder's shape_<i>.
GIVEN = {"train": ["shape_0", "shape_1", "shape_2"], "valid": ["shape_3"], "test": ["shape_4", "shape_5"]}


@pytest.fixture(scope="module")
def folder_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("folder") / "d"
    make_synthetic_folder(root, 6, seed=0, classes=3)
    return root


def _with_splits(folder_root: Path, tmp_path: Path, files: dict[str, list[str]]) -> Path:
    """A copy of ``folder_root`` whose splits/ holds ``files`` (file name → stems)."""
    root = tmp_path / "d"
    shutil.copytree(folder_root, root)
    (root / "splits").mkdir()
    for name, stems in files.items():
        (root / "splits" / name).write_text("".join(f"{stem}\n" for stem in stems))
    return root


@pytest.mark.parametrize(
    ("files", "found"),
    [
        ({"train.txt": GIVEN["train"], "test.txt": GIVEN["test"]}, "test.txt, train.txt"),
        (
            {"training.txt": GIVEN["train"], "valid.txt": GIVEN["valid"], "test.txt": GIVEN["test"]},
            "test.txt, training.txt, valid.txt",
        ),
        ({}, "nothing"),
    ],
    ids=["partial", "misnamed", "empty"],
)
def test_a_splits_folder_without_all_three_files_fails_in_one_line(folder_root, tmp_path, files, found):
    root = _with_splits(folder_root, tmp_path, files)
    with pytest.raises(UserError) as info:
        split_dataset(root, 0.5, 0.5, seed=0)
    assert str(info.value) == (
        f"{root / 'splits'}: expected train.txt, valid.txt (or val.txt) and test.txt, found {found}; "
        "add the missing ones or delete splits/ for a seeded split"
    )


def test_val_txt_is_taken_as_valid_txt(folder_root, tmp_path):
    valid = _with_splits(folder_root, tmp_path / "valid", {f"{name}.txt": stems for name, stems in GIVEN.items()})
    val = _with_splits(
        folder_root,
        tmp_path / "val",
        {"train.txt": GIVEN["train"], "val.txt": GIVEN["valid"] * 2, "test.txt": GIVEN["test"]},
    )
    a, b = split_dataset(valid, 0.5, 0.5, seed=0), split_dataset(val, 0.5, 0.5, seed=0)
    assert (b.train, b.valid, b.test) == (a.train, a.valid, a.test) == tuple(GIVEN.values())
    assert b.listed == {"train": 3, "valid": 2, "test": 2}
    # The duplicate's message names the file the stem is listed in.
    assert [s.detail for s in b.skipped["valid"]] == [
        f"{val / 'splits' / 'val.txt'}: shape_3 is listed twice; delete one"
    ]


def test_both_val_txt_and_valid_txt_fail_in_one_line(folder_root, tmp_path):
    files = {f"{name}.txt": stems for name, stems in GIVEN.items()} | {"val.txt": GIVEN["valid"]}
    root = _with_splits(folder_root, tmp_path, files)
    with pytest.raises(UserError, match=r"splits: both val.txt and valid.txt; keep one of them as the valid split$"):
        split_dataset(root, 0.5, 0.5, seed=0)
