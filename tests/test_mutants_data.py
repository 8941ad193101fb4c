"""Behaviour the mutation run (docs/mutation.md) found untested in pipeline/data/build.py."""

import numpy as np
import pytest
from PIL import Image

from pipeline.data.decode import decode_pair, trimap_to_mask
from pipeline.data.layout import image_path, trimap_path

TRIMAP = np.array([[1, 1, 3, 2], [1, 3, 3, 2], [3, 2, 2, 2]], dtype=np.uint8)


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


def test_a_stem_missing_from_list_txt_has_species_unknown_not_none(synthetic_root, tmp_path):
    # A pair whose list.txt line is gone (or names no species 1 or 2) still trains and is scored; the
    # species breakdown files it under "unknown", a string the tables and JSON can hold.
    import shutil

    from pipeline.data.build import build_cache
    from pipeline.data.layout import UNKNOWN_SPECIES, read_stems

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


def test_an_undecodable_trimap_is_skipped_as_such_with_its_one_line_message(tmp_path):
    from pipeline.data.build import decode_row
    from pipeline.data.report import UNDECODABLE_TRIMAP

    _pair(tmp_path, "Abyssinian_1", trimap_bytes=b"not a png")
    skipped = decode_row(tmp_path, "Abyssinian_1", "cat", 8, "pet")
    assert skipped.item == "Abyssinian_1" and skipped.reason == UNDECODABLE_TRIMAP
    assert skipped.detail.startswith(f"{trimap_path(tmp_path, 'Abyssinian_1')}: cannot decode")
    assert skipped.detail.endswith("replace the file or delete the pair") and "\n" not in skipped.detail


@pytest.mark.parametrize("boundary", ["pet", "background", "ignore"])
def test_a_decoded_row_packs_ignored_pixels_only_under_boundary_ignore(tmp_path, boundary):
    from pipeline.data.build import decode_row
    from pipeline.data.masks import IGNORE, PackedMasks

    _pair(tmp_path, "Abyssinian_1")
    row = decode_row(tmp_path, "Abyssinian_1", "cat", 8, boundary)
    native = PackedMasks.from_packed([row.native_bits], [row.shape])[0]
    np.testing.assert_array_equal(native, trimap_to_mask(TRIMAP, boundary) == 1)
    if boundary == "ignore":
        ignored = PackedMasks.from_packed([row.ignore_bits], [row.shape])[0]
        np.testing.assert_array_equal(ignored, TRIMAP == 3)
        assert (row.mask == IGNORE).any()
    else:
        assert row.ignore_bits is None


def test_a_chunk_is_decoded_in_order_with_each_stems_species(tmp_path):
    # What each worker of the pool runs (in a forked process, where mutmut cannot see it).
    from pipeline.data import build as data

    for stem in ("Abyssinian_1", "beagle_2"):
        _pair(tmp_path, stem)
    rows = data._decode_chunk(tmp_path, [("beagle_2", "dog"), ("Abyssinian_1", "cat")], 8, "ignore")
    assert [(r.stem, r.breed, r.species) for r in rows] == [
        ("beagle_2", "beagle", "dog"),
        ("Abyssinian_1", "Abyssinian", "cat"),
    ]
    assert all(r.image.shape == (8, 8, 3) and r.ignore_bits is not None for r in rows)


def test_a_decode_worker_dies_with_the_process_that_started_it(monkeypatch):
    import os

    from pipeline.data import build as data

    parents = []
    monkeypatch.setattr(data.signal, "signal", lambda *args: None)
    monkeypatch.setattr(data, "die_with_parent", parents.append)
    data._init_worker(os.getppid())
    assert parents == [os.getppid()]
