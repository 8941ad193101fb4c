"""split_sizes: the train and valid sizes a data source gives before any download, equal to what the split
stage then makes of the same data."""

from pathlib import Path

import pytest

from pipeline.core.param_schema import Data, Split
from pipeline.data.layout import read_stems
from pipeline.data.sizes import SplitSizes, split_sizes
from pipeline.data.split import split_dataset
from pipeline.data.synthetic import make_synthetic, make_synthetic_folder, trainval_size
from tests.support import shipped_params


def _sections(valid_fraction=0.1, test_fraction=0.2, **data) -> tuple[Data, Split]:
    params = shipped_params()
    return Data(**{**params["data"], **data}), Split(**{**params["split"], "valid_fraction": valid_fraction,
                                                        "test_fraction": test_fraction})  # fmt: skip


def test_the_official_pets_give_the_readme_counts_less_the_valid_share():
    assert split_sizes(*_sections()) == SplitSizes(3312, 368)  # trainval 3680, round(368.0) to valid
    assert split_sizes(*_sections(valid_fraction=0.25)) == SplitSizes(2760, 920)


def test_a_folder_holding_the_official_tarballs_gives_the_official_counts(tmp_path):
    for name in ("images.tar.gz", "annotations.tar.gz"):
        (tmp_path / name).touch()  # never opened: the download stage verifies them
    assert split_sizes(*_sections(source=str(tmp_path))) == SplitSizes(3312, 368)


@pytest.mark.parametrize("num_images", [5, 16])
def test_synthetic_pets_count_as_make_synthetic_lists_them(tmp_path, num_images):
    make_synthetic(tmp_path, num_images, seed=0)
    assert trainval_size(num_images) == len(read_stems(tmp_path / "annotations" / "trainval.txt"))
    split = split_dataset(tmp_path, 0.25, 0.2, seed=0)
    sizes = split_sizes(*_sections(valid_fraction=0.25, source="synthetic", synthetic_images=num_images))
    assert sizes == SplitSizes(len(split.train), len(split.valid))


def test_a_synthetic_folder_and_a_local_folder_count_as_their_split(tmp_path):
    make_synthetic_folder(tmp_path, 9, seed=0, classes=3)
    split = split_dataset(tmp_path, 0.3, 0.2, seed=0)  # 9: 2 to test, 7: 2 to valid
    assert (len(split.train), len(split.valid)) == (5, 2)
    kind = {"valid_fraction": 0.3, "test_fraction": 0.2}
    synthetic = _sections(**kind, source="synthetic", synthetic_images=9, synthetic_classes=3)
    assert split_sizes(*synthetic) == split_sizes(*_sections(**kind, source=str(tmp_path))) == SplitSizes(5, 2)


def test_a_folder_that_is_not_a_dataset_yet_gives_no_sizes(tmp_path):
    (tmp_path / "empty").mkdir()
    assert split_sizes(*_sections(source=str(tmp_path / "missing"))) is None
    assert split_sizes(*_sections(source=str(Path(tmp_path / "empty")))) is None
