import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import stages.preprocess
import stages.split
from pipeline.core.errors import UserError, run_stage
from pipeline.data.build import build_cache
from pipeline.data.cache import CachedSplit, load_cache, save_cache
from pipeline.data.decode import BadPair, load_pair, trimap_to_mask
from pipeline.data.layout import image_path, read_stems, trimap_path
from pipeline.data.masks import IGNORE, PackedMasks
from pipeline.data.report import (
    BAD_TRIMAP_VALUES,
    MISSING_FILE,
    SIZE_MISMATCH,
    UNDECODABLE_IMAGE,
)
from pipeline.data.split import make_split
from tests.conftest import REPO

TRIMAP = np.array(
    [
        [1, 1, 3, 2],
        [1, 3, 3, 2],
        [3, 2, 2, 2],
    ],
    dtype=np.uint8,
)


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


# --- make_split -------------------------------------------------------------------------------


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


# --- build_cache / save_cache / load_cache ------------------------------------------------------

SIZE = 64


def test_cache_round_trip_shapes_dtypes_and_masks(synthetic_root, tmp_path):
    stems = read_stems(synthetic_root / "annotations" / "trainval.txt")[:5]
    cache = build_cache(synthetic_root, stems, SIZE, "pet", progress=False)
    path = tmp_path / "sub" / "train"
    save_cache(path, cache)
    loaded = load_cache(path)

    assert loaded.images.shape == (len(stems), SIZE, SIZE, 3)
    assert loaded.masks.shape == (len(stems), SIZE, SIZE)
    assert loaded.images.dtype == np.uint8
    assert loaded.masks.dtype == np.uint8
    assert set(np.unique(loaded.masks).tolist()) <= {0, 1}
    assert loaded.stems == stems
    np.testing.assert_array_equal(loaded.images, cache.images)
    np.testing.assert_array_equal(loaded.masks, cache.masks)
    assert [p.name for p in path.parent.iterdir()] == ["train"]  # no temporary left behind
    assert sorted(p.name for p in path.iterdir()) == [
        "images.npy", "masks.npy", "meta.json", "native_bits.npy", "native_offsets.npy", "native_shapes.npy"
    ]  # fmt: skip

    for i, stem in enumerate(stems):
        with Image.open(trimap_path(synthetic_root, stem)) as tri:
            trimap = np.asarray(tri.resize((SIZE, SIZE), Image.Resampling.NEAREST))
        np.testing.assert_array_equal(loaded.masks[i], trimap_to_mask(trimap, "pet"), err_msg=stem)
        np.testing.assert_array_equal(loaded.masks[i], np.isin(trimap, (1, 3)).astype(np.uint8), err_msg=stem)
        with Image.open(image_path(synthetic_root, stem)) as img:
            image = np.asarray(img.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(loaded.images[i], image, err_msg=stem)
        # The native mask is the whole trimap at the photo's own size, same boundary policy.
        with Image.open(trimap_path(synthetic_root, stem)) as tri:
            full = np.asarray(tri)
        np.testing.assert_array_equal(loaded.native[i], np.isin(full, (1, 3)).astype(np.uint8), err_msg=stem)
        assert tuple(loaded.native.shapes[i]) == full.shape
    assert loaded.breeds == [s.rpartition("_")[0] for s in stems]
    assert loaded.species == ["cat" if s.startswith("Synthcat") else "dog" for s in stems]


def test_cache_round_trip_with_ignore_policy_keeps_the_band_out(synthetic_root, tmp_path):
    stems = read_stems(synthetic_root / "annotations" / "trainval.txt")[:4]
    path = tmp_path / "train"
    save_cache(path, build_cache(synthetic_root, stems, SIZE, "ignore", progress=False))
    assert {"native_ignore_bits.npy", "native_ignore_offsets.npy", "native_ignore_shapes.npy"} <= {
        p.name for p in path.iterdir()
    }
    loaded = load_cache(path)

    assert loaded.native_ignore is not None and len(loaded.native_ignore) == len(stems)
    for i, stem in enumerate(stems):
        with Image.open(trimap_path(synthetic_root, stem)) as tri:
            full = np.asarray(tri)
            small = np.asarray(tri.resize((SIZE, SIZE), Image.Resampling.NEAREST))
        # At image size: 1 pet, 0 background, 255 on the band, which survives the nearest resize.
        np.testing.assert_array_equal(loaded.masks[i], np.select([small == 1, small == 3], [1, IGNORE], 0))
        assert (loaded.masks[i] == IGNORE).any(), stem
        # Native: binary pet (band excluded) plus the band as its own bit-packed mask.
        np.testing.assert_array_equal(loaded.native[i], (full == 1).astype(np.uint8), err_msg=stem)
        np.testing.assert_array_equal(loaded.native_ignore[i], (full == 3).astype(np.uint8), err_msg=stem)
        assert set(np.unique(loaded.native[i]).tolist()) == {0, 1}


def test_caches_of_the_other_policies_have_no_ignore_arrays(synthetic_root, tmp_path):
    stems = read_stems(synthetic_root / "annotations" / "trainval.txt")[:2]
    path = tmp_path / "train"
    save_cache(path, build_cache(synthetic_root, stems, SIZE, "background", progress=False))
    assert not [p.name for p in path.iterdir() if p.name.startswith("native_ignore")]
    assert load_cache(path).native_ignore is None


def test_native_ignore_of_other_shapes_is_rejected(tmp_path):
    masks = np.zeros((2, 8, 8), np.uint8)
    other = PackedMasks.pack([np.zeros((8, 8)), np.zeros((8, 9))])
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="native_ignore"):
        CachedSplit(images, masks, ["a", "b"], PackedMasks.pack(masks), ["a", "b"], ["cat"] * 2, other)
    # The same in a file is a malformed cache: one line naming the folder.
    path = tmp_path / "odd"
    split = CachedSplit(images, masks, ["a", "b"], PackedMasks.pack(masks), ["a", "b"], ["cat"] * 2)
    save_cache(path, split)
    for name, array in other.to_arrays("native_ignore").items():
        np.save(path / f"{name}.npy", array)
    with pytest.raises(UserError, match="odd: not a petseg cache .*native_ignore masks differ"):
        load_cache(path)


def test_build_cache_background_policy_gives_smaller_masks(synthetic_root):
    stems = read_stems(synthetic_root / "annotations" / "trainval.txt")[:3]
    pet = build_cache(synthetic_root, stems, SIZE, "pet", progress=False).masks
    background = build_cache(synthetic_root, stems, SIZE, "background", progress=False).masks
    assert (background <= pet).all()
    for i in range(len(stems)):
        assert background[i].sum() < pet[i].sum()


def test_load_cache_missing_file_raises_user_error(tmp_path):
    path = tmp_path / "nope"
    with pytest.raises(UserError, match=r"nope: cache not found; run `dvc repro preprocess`"):
        load_cache(path)


def test_load_cache_not_a_cache_raises_user_error(tmp_path):
    # An .npz cache of an older petseg, and a folder of something else.
    path = tmp_path / "other.npz"
    np.savez(path, something=np.zeros(3))
    with pytest.raises(UserError, match=r"other.npz: not a petseg cache \(.*\); run `dvc repro -f preprocess`"):
        load_cache(path)
    (tmp_path / "folder").mkdir()
    np.save(tmp_path / "folder" / "something.npy", np.zeros(3))
    with pytest.raises(UserError, match="folder: not a petseg cache"):
        load_cache(tmp_path / "folder")


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


# --- split and preprocess stages, in process ----------------------------------------------------


def params_file(
    tmp_path: Path,
    image_size: int = 64,
    valid_fraction: float = 0.25,
    boundary: str = "pet",
    max_bad_fraction: float = 0.01,
) -> Path:
    """The repository's params.yaml with the data keys these tests vary, written into ``tmp_path``."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params.update(image_size=image_size)
    params["split"].update(valid_fraction=valid_fraction, seed=0)
    params["preprocess"].update(boundary=boundary)
    params["data"].update(max_bad_fraction=max_bad_fraction)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_split_and_preprocess_stages_write_their_outputs(synthetic_root, tmp_path, capsys):
    params = params_file(tmp_path)
    splits, cache = tmp_path / "splits", tmp_path / "cache"

    code = run_stage(stages.split.main, ["--params", str(params), "--raw", str(synthetic_root), "--out", str(splits)])
    assert code == 0
    expected = make_split(synthetic_root, 0.25, seed=0)
    assert sorted(p.name for p in splits.iterdir()) == ["summary.json", "test.txt", "train.txt", "valid.txt"]
    assert _lines(splits / "train.txt") == expected.train
    assert _lines(splits / "valid.txt") == expected.valid
    assert _lines(splits / "test.txt") == expected.test
    summary = json.loads((splits / "summary.json").read_text())
    assert summary["train"] == len(expected.train)
    assert summary["valid"] == len(expected.valid)
    assert summary["test"] == len(expected.test)
    assert summary["listed"] == {"trainval": 8, "test": 8} and summary["skipped"] == {"trainval": [], "test": []}

    report = tmp_path / "metrics" / "data.json"
    argv = ["--params", str(params), "--raw", str(synthetic_root), "--splits", str(splits), "--out", str(cache)]
    code = run_stage(stages.preprocess.main, [*argv, "--report", str(report)])
    assert code == 0
    assert sorted(p.name for p in cache.iterdir()) == ["test", "train", "valid"]
    data = json.loads(report.read_text())
    assert data["total"] == {"listed": 16, "used": 16, "skipped": 0, "skipped_fraction": 0.0}
    assert set(data["skipped_by_reason"].values()) == {0} and data["skipped_stems"] == {}
    assert data["splits"] == {name: {"used": summary[name], "skipped": 0} for name in ("train", "valid", "test")}
    for name in ("train", "valid", "test"):
        stems = _lines(splits / f"{name}.txt")
        loaded = load_cache(cache / name)
        assert loaded.stems == stems
        assert loaded.images.shape == (len(stems), 64, 64, 3)
        assert loaded.masks.shape == (len(stems), 64, 64)
        assert set(np.unique(loaded.masks).tolist()) == {0, 1}
        assert loaded.native_ignore is None


def test_preprocess_stage_with_boundary_ignore(synthetic_root, tmp_path):
    splits, cache = tmp_path / "splits", tmp_path / "cache"
    params = params_file(tmp_path, boundary="ignore")
    assert (
        run_stage(stages.split.main, ["--params", str(params), "--raw", str(synthetic_root), "--out", str(splits)]) == 0
    )
    argv = ["--params", str(params), "--raw", str(synthetic_root), "--splits", str(splits), "--out", str(cache)]
    assert run_stage(stages.preprocess.main, [*argv, "--report", str(tmp_path / "data.json")]) == 0
    loaded = load_cache(cache / "test")
    assert set(np.unique(loaded.masks).tolist()) == {0, 1, IGNORE}
    assert loaded.native_ignore is not None and len(loaded.native_ignore) == len(loaded.stems)


def test_preprocess_stage_rejects_image_size_not_multiple_of_32(synthetic_root, tmp_path, capsys):
    splits, cache = tmp_path / "splits", tmp_path / "cache"
    assert (
        run_stage(
            stages.split.main,
            ["--params", str(params_file(tmp_path)), "--raw", str(synthetic_root), "--out", str(splits)],
        )
        == 0
    )
    capsys.readouterr()

    params = params_file(tmp_path, image_size=100)
    argv = ["--params", str(params), "--raw", str(synthetic_root), "--splits", str(splits), "--out", str(cache)]
    code = run_stage(stages.preprocess.main, [*argv, "--report", str(tmp_path / "data.json")])

    err = capsys.readouterr().err
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ")
    assert "image_size" in err and "100" in err
    assert "Traceback" not in err
    assert not cache.exists()
    assert not (tmp_path / "data.json").exists()  # params are checked before any work


def test_split_stage_rejects_bad_valid_fraction(synthetic_root, tmp_path, capsys):
    splits = tmp_path / "splits"
    params = params_file(tmp_path, valid_fraction=1.5)
    code = run_stage(stages.split.main, ["--params", str(params), "--raw", str(synthetic_root), "--out", str(splits)])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ") and "valid_fraction" in err
    assert not splits.exists()


def test_split_stage_reports_missing_list_file(tmp_path, capsys):
    raw = tmp_path / "raw"
    (raw / "annotations").mkdir(parents=True)
    splits = tmp_path / "splits"
    code = run_stage(
        stages.split.main, ["--params", str(params_file(tmp_path)), "--raw", str(raw), "--out", str(splits)]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "trainval.txt" in err
    assert not splits.exists()


@pytest.mark.parametrize("name", ["images.npy", "native_bits.npy", "meta.json"])
@pytest.mark.parametrize("keep", [0, 0.1, 0.5], ids=["empty", "a_tenth", "half"])
def test_load_cache_truncated_file_raises_user_error(tmp_path, name, keep):
    masks = np.ones((2, 8, 8), np.uint8)
    split = CachedSplit(
        np.zeros((2, 8, 8, 3), np.uint8), masks, ["a", "b"], PackedMasks.pack(masks), ["a", "b"], ["cat"] * 2
    )
    path = tmp_path / "cut"
    save_cache(path, split)
    part = path / name
    part.write_bytes(part.read_bytes()[: int(keep * part.stat().st_size)])
    with pytest.raises(UserError, match=r"cut: not a petseg cache \(.+\); run `dvc repro -f preprocess`"):
        load_cache(path)


def test_a_trimap_of_another_size_than_its_photo_is_one_line(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "annotations" / "trimaps").mkdir(parents=True)
    Image.new("RGB", (40, 30)).save(tmp_path / "images" / "x.jpg")
    Image.fromarray(np.full((30, 41), 2, np.uint8)).save(tmp_path / "annotations" / "trimaps" / "x.png")
    with pytest.raises(BadPair, match=r"x.png: trimap is 41x30 px but its image is 40x30") as err:
        load_pair(tmp_path, "x", 32, "pet")
    assert err.value.reason == SIZE_MISMATCH
