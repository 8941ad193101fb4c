"""Read ``params.yaml`` once and validate the keys a stage uses.

Every check raises :class:`UserError` naming the key, the bad value and what is allowed, so a typo
in ``params.yaml`` or ``dvc exp run -S`` fails in one line before any work starts.
"""

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import UserError

# Shared training keys: top-level in params.yaml so `dvc exp run -S lr=3e-4` works; a model's own
# section may override any of them (e.g. `unet.lr`).
TRAIN_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "scheduler", "loss", "seed", "augment")
SCHEDULERS = ("cosine", "constant")
BOUNDARY_POLICIES = ("pet", "background")


def load_params(path: str | Path) -> dict[str, Any]:
    """Parse a params file into a dict. Raises UserError if it is missing or not a YAML mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: params file not found; run from the repository root") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of params at the top level")
    return data


def section(params: dict[str, Any], key: str) -> dict[str, Any]:
    """Return ``params[key]`` as a dict. Raises UserError if it is absent or not a mapping."""
    value = params.get(key)
    if not isinstance(value, dict):
        raise UserError(f"params.yaml: '{key}' must be a section (a mapping), got {value!r}")
    return value


def get_int(d: dict[str, Any], key: str, where: str = "", minimum: int | None = None) -> int:
    """``d[key]`` as an int (bools rejected), at least ``minimum`` if given."""
    value = _require(d, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"params.yaml: {where}{key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise UserError(f"params.yaml: {where}{key} must be >= {minimum}, got {value}")
    return value


def get_float(
    d: dict[str, Any], key: str, where: str = "", minimum: float | None = None, maximum: float | None = None
) -> float:
    """``d[key]`` as a float in [minimum, maximum].

    Strings such as ``"3e-4"`` are accepted because YAML 1.1 (PyYAML) reads an exponent without a
    decimal point as a string.
    """
    value = _require(d, key, where)
    try:
        if isinstance(value, bool):
            raise TypeError
        number = float(value)
    except (TypeError, ValueError):
        raise UserError(f"params.yaml: {where}{key} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise UserError(f"params.yaml: {where}{key} must be a finite number, got {value!r}")
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise UserError(f"params.yaml: {where}{key} must be in [{minimum}, {maximum}], got {number}")
    return number


def get_choice(d: dict[str, Any], key: str, choices: tuple[str, ...], where: str = "") -> str:
    """``d[key]``, which must be one of ``choices``."""
    value = _require(d, key, where)
    if value not in choices:
        raise UserError(f"params.yaml: {where}{key} must be one of {', '.join(choices)}; got {value!r}")
    return value


def _require(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise UserError(f"params.yaml: missing key {where}{key}; see the README for the full params file")
    return d[key]


@dataclass(frozen=True)
class TrainConfig:
    """Training hyperparameters for one model, after its section's overrides are applied.

    ``epochs`` and ``batch_size`` count passes and images; ``lr`` is AdamW's peak learning rate,
    which the ``scheduler`` adjusts after every optimiser step; ``augment`` names a level of
    :func:`pipeline.dataset.train_transform`.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    scheduler: str
    loss: str
    seed: int
    augment: str


def train_config(params: dict[str, Any], model: str) -> tuple[TrainConfig, dict[str, Any]]:
    """Split ``params`` into the training config for ``model`` and the model's architecture kwargs.

    The model's section (``params[model]``) may override any shared key in ``TRAIN_KEYS``; its other
    keys are passed to the model class. Raises UserError on a bad value.
    """
    from pipeline.dataset import AUGMENTATIONS
    from pipeline.losses import LOSSES

    own = section(params, model)
    merged = {key: params[key] for key in TRAIN_KEYS if key in params}
    merged.update({key: own[key] for key in TRAIN_KEYS if key in own})
    arch = {key: value for key, value in own.items() if key not in TRAIN_KEYS}
    cfg = TrainConfig(
        epochs=get_int(merged, "epochs", minimum=1),
        batch_size=get_int(merged, "batch_size", minimum=1),
        lr=get_float(merged, "lr", minimum=0.0),
        weight_decay=get_float(merged, "weight_decay", minimum=0.0),
        scheduler=get_choice(merged, "scheduler", SCHEDULERS),
        loss=get_choice(merged, "loss", tuple(LOSSES)),
        seed=get_int(merged, "seed", minimum=0),
        augment=get_choice(merged, "augment", AUGMENTATIONS),
    )
    if cfg.lr == 0.0:
        raise UserError("params.yaml: lr must be > 0")
    return cfg, arch


def get_str(d: dict[str, Any], key: str, where: str = "") -> str:
    """``d[key]``, which must be a non-empty string."""
    value = _require(d, key, where)
    if not isinstance(value, str) or not value:
        raise UserError(f"params.yaml: {where}{key} must be a non-empty string, got {value!r}")
    return value
