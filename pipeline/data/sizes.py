"""How many train and valid images a data source gives, known before anything is downloaded or decoded:
what the validate stage's estimate of the training time (:mod:`pipeline.train.workload`) counts.

The official pets: the dataset README's counts; a synthetic set: its ``data.synthetic_images`` as
:mod:`pipeline.data.synthetic` lists them; a local folder: its official tarballs (the official counts) or
its pairs and splits as the split stage reads them (list files and file names only, no image decoded).
Each split then holds out valid with the split stage's own rule (:func:`pipeline.data.split.held_out`).
"""

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.param_schema import Data, Split
from pipeline.data.archives import is_packed
from pipeline.data.layout import OFFICIAL_SIZES
from pipeline.data.split import held_out, split_dataset
from pipeline.data.synthetic import trainval_size


@dataclass(frozen=True)
class SplitSizes:
    """Images in the train and valid splits."""

    train: int
    valid: int


def _from_trainval(trainval: int, valid_fraction: float) -> SplitSizes:
    valid = held_out(trainval, valid_fraction)
    return SplitSizes(trainval - valid, valid)


def split_sizes(data: Data, split: Split) -> SplitSizes | None:
    """The train and valid sizes that ``data`` (params.yaml's data section) and ``split`` (its split section) give,
    or None where they cannot be known yet: a local folder that is missing or not a dataset (the download
    stage says what is wrong with it). A folder's pairs are counted as :func:`pipeline.data.split.split_dataset`
    lists them (a stat per file); the pairs that preprocess will skip as undecodable are still counted.
    """
    if data.source == "oxford-iiit-pet":
        return _from_trainval(OFFICIAL_SIZES["trainval"], split.valid_fraction)
    if data.source == "synthetic":
        if not data.synthetic_classes:
            return _from_trainval(trainval_size(data.synthetic_images), split.valid_fraction)
        test = held_out(data.synthetic_images, split.test_fraction)
        return _from_trainval(data.synthetic_images - test, split.valid_fraction)
    folder = Path(data.source).expanduser()
    if is_packed(folder):
        return _from_trainval(OFFICIAL_SIZES["trainval"], split.valid_fraction)
    try:
        found = split_dataset(folder, split.valid_fraction, split.test_fraction, split.seed)
    except UserError:
        return None
    return SplitSizes(len(found.train), len(found.valid))
