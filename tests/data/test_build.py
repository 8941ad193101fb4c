"""Building the caches (pipeline/data/build.py): the arrays of each boundary policy, the native-resolution
masks, species from list.txt, and the rows each decode worker returns."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline.data import build
from pipeline.data.build import build_cache, decode_row
from pipeline.data.cache import load_cache, save_cache
from pipeline.data.classes import pet_classes
from pipeline.data.decode import trimap_to_mask
from pipeline.data.geometry import Resize
from pipeline.data.layout import UNKNOWN_SPECIES, image_path, read_stems, trimap_path
from pipeline.data.masks import IGNORE, PackedMasks
from pipeline.data.report import UNDECODABLE_TRIMAP
from pipeline.data.sources import Source
from tests.support import TRIMAP

# --- build_cache, through save_cache and load_cache ---------------------------------------------

SIZE = 64

SQUARE_8 = Resize("square", 8)


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
        "images.npy", "masks.npy", "meta.json", "native_bits.npy", "native_offsets.npy", "native_shapes.npy",
        "sizes.npy",
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


def test_build_cache_background_policy_gives_smaller_masks(synthetic_root):
    stems = read_stems(synthetic_root / "annotations" / "trainval.txt")[:3]
    pet = build_cache(synthetic_root, stems, SIZE, "pet", progress=False).masks
    background = build_cache(synthetic_root, stems, SIZE, "background", progress=False).masks
    assert (background <= pet).all()
    for i in range(len(stems)):
        assert background[i].sum() < pet[i].sum()


# --- species, and the rows the decode workers return ---------------------------------------------


def test_a_stem_missing_from_list_txt_has_species_unknown_not_none(synthetic_root, tmp_path):
    # A pair whose list.txt line is gone (or names no species 1 or 2) still trains and is scored; the
    # species breakdown files it under "unknown", a string the tables and JSON can hold.
    root = tmp_path / "raw"
    shutil.copytree(synthetic_root, root)
    stems = read_stems(root / "annotations" / "list.txt")[:3]
    lines = (root / "annotations" / "list.txt").read_text().splitlines()
    (root / "annotations" / "list.txt").write_text("\n".join(x for x in lines if not x.startswith(stems[1] + " ")))
    split = build_cache(root, stems, 32, "pet", progress=False)
    assert split.stems == stems
    assert split.species[1] == UNKNOWN_SPECIES
    assert {split.species[0], split.species[2]} <= {"cat", "dog"}


def _pair(root, stem, trimap_bytes=None):
    (root / "images").mkdir(exist_ok=True)
    (root / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (4, 3), (90, 60, 30)).save(image_path(root, stem), format="JPEG")
    if trimap_bytes is None:
        Image.fromarray(TRIMAP, mode="L").save(trimap_path(root, stem))
    else:
        trimap_path(root, stem).write_bytes(trimap_bytes)


def _pets(root, boundary, species=None):
    return Source(root, pet_classes("binary"), folder=False, boundary=boundary, species=species or {})


def test_an_undecodable_trimap_is_skipped_as_such_with_its_one_line_message(tmp_path):
    _pair(tmp_path, "Abyssinian_1", trimap_bytes=b"not a png")
    skipped = decode_row(_pets(tmp_path, "pet"), "Abyssinian_1", SQUARE_8, (8, 8))
    assert skipped.item == "Abyssinian_1" and skipped.reason == UNDECODABLE_TRIMAP
    assert skipped.detail.startswith(f"{trimap_path(tmp_path, 'Abyssinian_1')}: cannot decode")
    assert skipped.detail.endswith("replace the file or delete the pair") and "\n" not in skipped.detail


@pytest.mark.parametrize("boundary", ["pet", "background", "ignore"])
def test_a_decoded_row_packs_ignored_pixels_only_under_boundary_ignore(tmp_path, boundary):
    _pair(tmp_path, "Abyssinian_1")
    row = decode_row(_pets(tmp_path, boundary), "Abyssinian_1", SQUARE_8, (8, 8))
    native = PackedMasks.from_packed([row.native_bits], [row.shape])[0]
    np.testing.assert_array_equal(native, trimap_to_mask(TRIMAP, boundary) == 1)
    if boundary == "ignore":
        ignored = PackedMasks.from_packed([row.ignore_bits], [row.shape])[0]
        np.testing.assert_array_equal(ignored, TRIMAP == 3)
        assert (row.mask == IGNORE).any()
    else:
        assert row.ignore_bits is None


def test_a_chunk_is_decoded_in_order_with_each_stems_species(tmp_path):
    # What each decode worker runs, called in this process (the pool runs it in forked ones).
    for stem in ("Abyssinian_1", "beagle_2"):
        _pair(tmp_path, stem)
    rows = build._decode_chunk(
        _pets(tmp_path, "ignore", {"beagle_2": "dog", "Abyssinian_1": "cat"}),
        ["beagle_2", "Abyssinian_1"],
        SQUARE_8,
        (8, 8),
    )
    assert [(r.stem, r.breed, r.species) for r in rows] == [
        ("beagle_2", "beagle", "dog"),
        ("Abyssinian_1", "Abyssinian", "cat"),
    ]
    assert all(r.image.shape == (8, 8, 3) and r.ignore_bits is not None for r in rows)


def test_a_decode_worker_dies_with_the_process_that_started_it(monkeypatch):
    parents = []
    monkeypatch.setattr(build.signal, "signal", lambda *args: None)
    monkeypatch.setattr(build, "die_with_parent", parents.append)
    build._init_worker(os.getppid())
    assert parents == [os.getppid()]
