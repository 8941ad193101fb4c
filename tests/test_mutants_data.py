"""Behaviour the mutation run (docs/mutation.md) found untested in pipeline/data.py."""

import numpy as np
import pytest
from PIL import Image

from pipeline.data import decode_pair, trimap_to_mask
from pipeline.layout import image_path, trimap_path

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

    from pipeline.data import build_cache
    from pipeline.layout import UNKNOWN_SPECIES, read_stems

    root = tmp_path / "raw"
    shutil.copytree(synthetic_root, root)
    stems = read_stems(root / "annotations" / "list.txt")[:3]
    lines = (root / "annotations" / "list.txt").read_text().splitlines()
    (root / "annotations" / "list.txt").write_text("\n".join(x for x in lines if not x.startswith(stems[1] + " ")))
    split = build_cache(root, stems, 32, "pet", progress=False)
    assert split.stems == stems
    assert split.species[1] == UNKNOWN_SPECIES
    assert {split.species[0], split.species[2]} <= {"cat", "dog"}
