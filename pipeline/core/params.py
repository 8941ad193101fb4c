"""Reading the params files the stages read: params.yaml, checked against the schema, and the
validate stage's data/download.json; every stage takes its typed view of them.

Every failure is a :class:`UserError` of one line naming the key, the value and what is allowed, or
the unknown key and the nearest valid one (:mod:`pipeline.core.messages`). The schema itself is
:mod:`pipeline.core.param_schema` and :mod:`pipeline.core.param_training`; its classes are importable
from here too, where the stages and the training view have always imported them.
"""

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from pipeline.core.errors import UserError, first_line
from pipeline.core.messages import describe
from pipeline.core.param_schema import MODEL_SECTIONS, Data, Evaluate, Params, SyntheticImages
from pipeline.core.param_training import AugmentOptions, ModelTraining, TrainKeys
from pipeline.core.param_types import ClassCount, Name, Section, Seed

__all__ = [
    "MODEL_SECTIONS",
    "AugmentOptions",
    "DownloadInputs",
    "Evaluate",
    "ModelTraining",
    "Params",
    "TrainKeys",
    "download_inputs",
    "load_params",
    "parse_params",
    "read_download_inputs",
]


def load_params(path: str | Path) -> Params:
    """Read and validate a params file. Raises UserError if it is missing, not YAML, or breaks the schema."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: params file not found; run from the repository root") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({first_line(err)}); fix the file") from None
    return parse_params(data, path.name)


def parse_params(data: Any, where: str = "params.yaml") -> Params:
    """Validate a parsed params mapping against :class:`Params`; raise UserError with the first problem.

    Unknown keys are reported first (with the nearest valid key), then missing keys, then bad values;
    the message ends with how many other problems there are.
    """
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a mapping of params at the top level")
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        errors = sorted(err.errors(), key=lambda e: {"extra_forbidden": 0, "missing": 1}.get(e["type"], 2))
        more = f" (and {len(errors) - 1} more problems)" if len(errors) > 1 else ""
        raise UserError(f"{where}: {describe(errors[0], Params)}{more}") from None


class DownloadInputs(Section):
    """What decides the download stage's output: ``data.source`` and only the keys that source uses.

    Written by the validate stage (:func:`download_inputs`) and read by the download stage, so that
    changing, say, ``data.synthetic_seed`` while the source is the official dataset reruns nothing.
    """

    source: Name
    url: Name | None = None
    synthetic_images: SyntheticImages | None = None
    synthetic_seed: Seed | None = None
    synthetic_classes: ClassCount | None = None


def download_inputs(data: Data) -> DownloadInputs:
    """The keys of ``data`` that change the download stage's output for its source (``synthetic_classes``
    only when not 0, the pets)."""
    if data.source == "oxford-iiit-pet":
        return DownloadInputs(source=data.source, url=data.url)
    if data.source == "synthetic":
        return DownloadInputs(
            source=data.source,
            synthetic_images=data.synthetic_images,
            synthetic_seed=data.synthetic_seed,
            synthetic_classes=data.synthetic_classes or None,
        )
    return DownloadInputs(source=data.source)  # a local folder: its path is all


def read_download_inputs(path: str | Path) -> DownloadInputs:
    """Read the file the validate stage wrote. Raises UserError if it is missing or malformed."""
    path = Path(path)
    try:
        return DownloadInputs.model_validate_json(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run `dvc repro validate` (it writes this file)") from None
    except ValidationError as err:
        raise UserError(f"{path}: {describe(err.errors()[0], DownloadInputs)}; run `dvc repro -f validate`") from None
