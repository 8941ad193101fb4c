from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.data.archives import opened
from pipeline.data.download import prepare_dataset
from pipeline.data.layout import LIST_FILES, check_layout, image_path, read_stems, trimap_path
from pipeline.data.synthetic import make_synthetic

NUM = 8


def _trimaps(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "annotations" / "trimaps").iterdir())}


def _lists(root: Path) -> dict[str, str]:
    return {name: (root / "annotations" / name).read_text() for name in LIST_FILES}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    make_synthetic(root, NUM, seed=3)
    return root


def test_make_synthetic_writes_official_layout_with_a_pair_per_listed_stem(synth):
    check_layout(synth)
    stems = read_stems(synth / "annotations" / "list.txt")
    assert len(stems) == len(set(stems)) == NUM
    for stem in stems:
        assert image_path(synth, stem).is_file()
        assert trimap_path(synth, stem).is_file()
    assert len(list((synth / "images").iterdir())) == NUM
    assert len(list((synth / "annotations" / "trimaps").iterdir())) == NUM


def test_make_synthetic_images_are_rgb_jpegs_matching_their_trimap_size(synth):
    for stem in read_stems(synth / "annotations" / "list.txt"):
        with Image.open(image_path(synth, stem)) as img:
            assert img.format == "JPEG"
            assert img.mode == "RGB"
            image_size = img.size
        with Image.open(trimap_path(synth, stem)) as tri:
            assert tri.format == "PNG"
            assert tri.size == image_size


def test_make_synthetic_same_seed_is_byte_identical(tmp_path):
    make_synthetic(tmp_path / "a", NUM, seed=11)
    make_synthetic(tmp_path / "b", NUM, seed=11)
    assert _trimaps(tmp_path / "a") == _trimaps(tmp_path / "b")
    assert _lists(tmp_path / "a") == _lists(tmp_path / "b")
    images_a = {p.name: p.read_bytes() for p in (tmp_path / "a" / "images").iterdir()}
    images_b = {p.name: p.read_bytes() for p in (tmp_path / "b" / "images").iterdir()}
    assert images_a == images_b


def test_make_synthetic_different_seed_gives_different_trimaps(tmp_path):
    make_synthetic(tmp_path / "a", NUM, seed=11)
    make_synthetic(tmp_path / "b", NUM, seed=12)
    a, b = _trimaps(tmp_path / "a"), _trimaps(tmp_path / "b")
    assert a.keys() == b.keys()
    assert all(a[name] != b[name] for name in a)


def test_make_synthetic_trimaps_have_pet_background_and_a_boundary_band_between_them(synth):
    for path in sorted((synth / "annotations" / "trimaps").iterdir()):
        with Image.open(path) as img:
            assert img.mode == "L"
            t = np.asarray(img)
        assert set(np.unique(t).tolist()) == {1, 2, 3}, path.name
        pet, background = t == 1, t == 2
        # No pet pixel may touch a background pixel: the boundary band (3) separates them.
        assert not (pet[1:, :] & background[:-1, :]).any(), path.name
        assert not (pet[:-1, :] & background[1:, :]).any(), path.name
        assert not (pet[:, 1:] & background[:, :-1]).any(), path.name
        assert not (pet[:, :-1] & background[:, 1:]).any(), path.name


def test_make_synthetic_list_files_have_official_format(synth):
    text = (synth / "annotations" / "list.txt").read_text()
    lines = text.splitlines()
    header = [line for line in lines if line.startswith("#")]
    data = [line for line in lines if not line.startswith("#")]
    assert header, "list.txt has no # header lines"
    assert lines[: len(header)] == header, "header lines must come first"
    assert len(data) == NUM
    for name in LIST_FILES:
        for line in (synth / "annotations" / name).read_text().splitlines():
            if line.startswith("#"):
                continue
            fields = line.split()
            assert len(fields) == 4, line
            stem, class_id, species, breed = fields[0], *map(int, fields[1:])
            assert 1 <= class_id <= 37
            assert species in (1, 2)
            # Official convention: cat stems start with a capital letter, dogs with a small one.
            assert (species == 1) == stem[0].isupper(), line
            assert breed >= 1


def test_make_synthetic_trainval_and_test_partition_list(synth):
    everything = read_stems(synth / "annotations" / "list.txt")
    trainval = read_stems(synth / "annotations" / "trainval.txt")
    test = read_stems(synth / "annotations" / "test.txt")
    assert trainval and test
    assert not set(trainval) & set(test)
    assert sorted(trainval + test) == sorted(everything)
    # Each data line of the split files is the same line as in list.txt.
    list_lines = {line for line in (synth / "annotations" / "list.txt").read_text().splitlines()}
    for name in ("trainval.txt", "test.txt"):
        for line in (synth / "annotations" / name).read_text().splitlines():
            assert line in list_lines


def test_make_synthetic_minimum_four_images_gives_nonempty_splits(tmp_path):
    make_synthetic(tmp_path, 4, seed=0)
    check_layout(tmp_path)
    assert read_stems(tmp_path / "annotations" / "trainval.txt")
    assert read_stems(tmp_path / "annotations" / "test.txt")


@pytest.mark.parametrize("num_images", [0, 3])
def test_make_synthetic_rejects_fewer_than_four_images(tmp_path, num_images):
    with pytest.raises(ValueError, match="num_images"):
        make_synthetic(tmp_path / "root", num_images, seed=0)
    assert not (tmp_path / "root").exists()


def test_synthetic_source_gives_byte_identical_archives_for_a_seed(tmp_path):
    """The download stage packs the generated set: the same seed gives the same bytes run after run
    (so DVC sees the same hash and reruns nothing downstream), another seed other bytes."""
    packed = {}
    for run, seed in (("a", 11), ("b", 11), ("c", 12)):
        dest = tmp_path / run / "raw"
        prepare_dataset("synthetic", dest, synthetic_images=NUM, synthetic_seed=seed)
        assert sorted(p.name for p in (tmp_path / run).iterdir()) == ["raw"]
        packed[run] = {p.name: p.read_bytes() for p in sorted(dest.iterdir())}
    assert sorted(packed["a"]) == ["annotations.tar.gz", "images.tar.gz"]
    assert packed["a"] == packed["b"]
    assert all(packed["a"][name] != packed["c"][name] for name in packed["a"])
    with opened(tmp_path / "a" / "raw") as root:
        make_synthetic(tmp_path / "reference", NUM, seed=11)
        assert _trimaps(root) == _trimaps(tmp_path / "reference")
        assert _lists(root) == _lists(tmp_path / "reference")
        images = {p.name: p.read_bytes() for p in (root / "images").iterdir()}
        assert images == {p.name: p.read_bytes() for p in (tmp_path / "reference" / "images").iterdir()}
