"""Read ``params.yaml`` once and validate the keys a stage uses.

Every check raises :class:`UserError` naming the key, the bad value and what is allowed, so a typo
in ``params.yaml`` or ``dvc exp run -S`` fails in one line before any work starts.
"""

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import UserError, first_line

# Shared training keys: top-level in params.yaml so `dvc exp run -S lr=3e-4` works; a model's own
# section may override any of them (e.g. `unet.lr`).
TRAIN_KEYS = (
    "epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "scheduler",
    "loss",
    "seed",
    "augment",
    "optimizer",
    "momentum",
    "warmup_epochs",
    "grad_clip",
    "accumulate_steps",
    "patience",
    "init",
    "num_workers",
    "compile",
)
# Training keys that only make sense for one architecture; set in that model's section.
MODEL_TRAIN_KEYS = ("encoder_weights", "zero_init_residual")
# Keys added after the first params.yaml; absent means today's behaviour.
OPTIONAL_DEFAULTS = {
    "optimizer": "adamw",
    "momentum": 0.9,
    "warmup_epochs": 0.0,
    "grad_clip": 0.0,
    "accumulate_steps": 1,
    "patience": 0,
    "init": "default",
    "num_workers": "auto",
    "compile": False,
    "encoder_weights": "none",
    "zero_init_residual": False,
}
BOUNDARY_POLICIES = ("pet", "background", "ignore")


def load_params(path: str | Path) -> dict[str, Any]:
    """Parse a params file into a dict. Raises UserError if it is missing or not a YAML mapping."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: params file not found; run from the repository root") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({first_line(err)}); fix the file") from None
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

    ``epochs`` and ``batch_size`` count passes and images; ``lr`` is the peak learning rate of the
    ``optimizer`` (adamw | sgd, with ``momentum``), which the ``scheduler`` adjusts after every
    optimiser step, after ``warmup_epochs`` of linear warmup; ``augment`` names a level of
    :func:`pipeline.dataset.train_transform` and ``augmentation`` its options. ``grad_clip`` is a
    max gradient norm (0 = off); ``accumulate_steps`` batches make one optimiser step (effective
    batch = batch_size x accumulate_steps); ``patience`` epochs without a better valid Dice stop
    training (0 = off). ``init`` and ``zero_init_residual`` choose the weight initialisation,
    ``encoder_weights`` (none | imagenet | a path) a pretrained ResNet-34 encoder. ``num_workers``
    ("auto" or a count) and ``compile`` (torch.compile) change speed, not results.
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    scheduler: str
    loss: str
    seed: int
    augment: str
    optimizer: str = "adamw"
    momentum: float = 0.9
    warmup_epochs: float = 0.0
    grad_clip: float = 0.0
    accumulate_steps: int = 1
    patience: int = 0
    init: str = "default"
    num_workers: int | str = "auto"
    compile: bool = False
    encoder_weights: str = "none"
    zero_init_residual: bool = False
    augmentation: Any = None  # pipeline.dataset.AugmentOptions; None = its defaults

    def fingerprint_inputs(self) -> dict[str, Any]:
        """The settings that decide the trained weights: all but ``num_workers``, which only changes speed."""
        inputs = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "num_workers"}
        inputs["augmentation"] = repr(self.augmentation)
        return inputs


def train_config(params: dict[str, Any], model: str) -> tuple[TrainConfig, dict[str, Any]]:
    """Split ``params`` into the training config for ``model`` and the model's architecture kwargs.

    The model's section (``params[model]``) may override any shared key in ``TRAIN_KEYS`` and may
    set the model-level training keys in ``MODEL_TRAIN_KEYS``; its other keys are passed to the
    model class. Keys added after the first release default to today's behaviour when absent.
    Raises UserError on a bad value.
    """
    from pipeline.dataset import AUGMENTATIONS
    from pipeline.losses import LOSSES
    from pipeline.models import INIT_SCHEMES
    from pipeline.schedules import OPTIMIZERS, SCHEDULES

    own = section(params, model)
    merged = {key: params[key] for key in TRAIN_KEYS if key in params}
    merged.update({key: own[key] for key in TRAIN_KEYS if key in own})
    merged.update({key: own[key] for key in MODEL_TRAIN_KEYS if key in own})
    merged = {**OPTIONAL_DEFAULTS, **merged}
    arch = {key: value for key, value in own.items() if key not in TRAIN_KEYS and key not in MODEL_TRAIN_KEYS}
    epochs = get_int(merged, "epochs", minimum=1)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=get_int(merged, "batch_size", minimum=1),
        lr=get_float(merged, "lr", minimum=0.0),
        weight_decay=get_float(merged, "weight_decay", minimum=0.0),
        scheduler=get_choice(merged, "scheduler", SCHEDULES),
        loss=get_choice(merged, "loss", tuple(LOSSES)),
        seed=get_int(merged, "seed", minimum=0),
        augment=get_choice(merged, "augment", AUGMENTATIONS),
        optimizer=get_choice(merged, "optimizer", OPTIMIZERS),
        momentum=get_float(merged, "momentum", minimum=0.0, maximum=1.0),
        warmup_epochs=get_float(merged, "warmup_epochs", minimum=0.0, maximum=epochs - 1),
        grad_clip=get_float(merged, "grad_clip", minimum=0.0),
        accumulate_steps=get_int(merged, "accumulate_steps", minimum=1),
        patience=get_int(merged, "patience", minimum=0),
        init=get_choice(merged, "init", INIT_SCHEMES),
        num_workers=_workers(merged["num_workers"]),
        compile=get_bool(merged, "compile"),
        encoder_weights=get_str(merged, "encoder_weights"),
        zero_init_residual=get_bool(merged, "zero_init_residual"),
        augmentation=augment_options(params.get("augmentation", {})),
    )
    if cfg.lr == 0.0:
        raise UserError("params.yaml: lr must be > 0")
    return cfg, arch


def _workers(value: Any) -> int | str:
    if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
        return value
    raise UserError(f"params.yaml: num_workers must be auto or an integer >= 0, got {value!r}")


def augment_options(d: Any):
    """``params["augmentation"]`` as :class:`pipeline.dataset.AugmentOptions` (absent keys: defaults).

    Raises UserError for a non-mapping, an unknown key (listing the valid ones) or a bad value.
    """
    from pipeline.dataset import AugmentOptions

    if not isinstance(d, dict):
        raise UserError(f"params.yaml: 'augmentation' must be a section (a mapping), got {d!r}")
    valid = [f.name for f in fields(AugmentOptions)]
    unknown = sorted(set(d) - set(valid), key=str)
    if unknown:
        raise UserError(
            f"params.yaml: augmentation has no key {', '.join(map(str, unknown))}; valid: {', '.join(valid)}"
        )
    kwargs = {}
    for key, value in d.items():
        default = getattr(AugmentOptions(), key)
        if isinstance(default, bool):
            kwargs[key] = get_bool(d, key, "augmentation.")
        elif isinstance(default, tuple):
            if not isinstance(value, list | tuple) or len(value) != len(default):
                raise UserError(f"params.yaml: augmentation.{key} must be a list like {list(default)}, got {value!r}")
            kwargs[key] = tuple(get_float({key: v}, key, "augmentation.") for v in value)
        else:
            kwargs[key] = get_float(d, key, "augmentation.")
    try:
        return AugmentOptions(**kwargs)
    except ValueError as err:
        raise UserError(f"params.yaml: augmentation: {err}") from None


def get_bool(d: dict[str, Any], key: str, where: str = "") -> bool:
    """``d[key]``, which must be true or false."""
    value = _require(d, key, where)
    if not isinstance(value, bool):
        raise UserError(f"params.yaml: {where}{key} must be true or false, got {value!r}")
    return value


def get_str(d: dict[str, Any], key: str, where: str = "") -> str:
    """``d[key]``, which must be a non-empty string."""
    value = _require(d, key, where)
    if not isinstance(value, str) or not value:
        raise UserError(f"params.yaml: {where}{key} must be a non-empty string, got {value!r}")
    return value
