"""params.yaml: one schema (pydantic), read once; every stage takes its typed view of it.

Each section forbids keys it does not know, so a misspelt key (``learning_rate``, ``evaluate.treshold``)
fails instead of silently doing nothing. Every failure is a :class:`UserError` of one line naming
the key, the value and what is allowed, or the unknown key and the nearest valid one.
The allowed names (losses, schedules, ...) come from :mod:`pipeline.core.constants`, which the
registries that implement them use too, so reading params imports no torch code.
"""

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BeforeValidator, Field, ValidationError, create_model, model_validator

from pipeline.core import constants
from pipeline.core.constants import SIZE_MULTIPLE
from pipeline.core.errors import UserError, first_line
from pipeline.core.messages import describe
from pipeline.core.param_types import (
    Count,
    CountOrZero,
    Flag,
    Fraction,
    Name,
    NonNegative,
    Number,
    Section,
    Seed,
    auto_or,
    auto_or_count,
    class_count,
    loader_workers,
    probability,
)


class Data(Section):
    """``data``: where the dataset comes from, and how many bad pairs preprocess tolerates."""

    source: Name
    url: Name
    synthetic_images: Annotated[int, Field(strict=True, ge=4)] = 200
    synthetic_seed: Seed = 0
    synthetic_classes: Annotated[int, BeforeValidator(class_count)] = 0
    max_bad_fraction: Fraction = 0.01


class Split(Section):
    """``split``: share of official trainval held out as valid, and the draw's seed; for a folder dataset
    without splits/, ``test_fraction`` of its pairs go to test first."""

    valid_fraction: Fraction
    seed: Seed
    test_fraction: Fraction = 0.2


class Preprocess(Section):
    """``preprocess``: what the trimap's boundary band counts as, and how many processes decode the pairs
    (``workers``: "auto" = one per CPU, or a count >= 1; the cache is the same for any count)."""

    boundary: Literal[constants.BOUNDARY_POLICIES]
    workers: Annotated[int | str, BeforeValidator(auto_or_count)] = "auto"


class AugmentOptions(Section):
    """What the "full" augmentation does (``augmentation`` section); the defaults are the original "full".

    ``hflip``/``vflip``: random horizontal/vertical flip, each with probability 0.5 (vflip off by
    default: pets are rarely upside down). ``degrees``: random rotation by an angle uniform in
    [-degrees, degrees], in degrees; 0 = off. ``crop_scale``: (lo, hi) range of the area fraction of
    the random resized crop. ``jitter``: brightness, contrast and saturation strength (factors in
    [1 - jitter, 1 + jitter]); 0 = off. Raises pydantic's ValidationError (a ValueError) unless
    0 < lo <= hi <= 1, 0 <= degrees <= 180 and jitter >= 0.
    """

    hflip: Flag = True
    vflip: Flag = False
    degrees: Annotated[Number, Field(ge=0, le=180)] = 0.0
    crop_scale: tuple[Number, Number] = (0.5, 1.0)
    jitter: NonNegative = 0.2

    @model_validator(mode="after")
    def _crop_scale_order(self):
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must be two area fractions 0 < lo <= hi <= 1, got {[lo, hi]}")
        return self


class TrainKeys(Section):
    """Shared training keys (top level of params.yaml, so ``dvc exp run -S lr=3e-4`` works).

    Keys added after the first params.yaml have defaults that keep the first release's behaviour.
    """

    epochs: Count
    batch_size: Count
    lr: Annotated[Number, Field(gt=0)]
    weight_decay: NonNegative
    optimizer: Literal[constants.OPTIMIZERS] = "adamw"
    momentum: Fraction = 0.9
    scheduler: Literal[constants.SCHEDULERS]
    warmup_epochs: NonNegative = 0.0
    loss: Literal[constants.LOSSES]
    seed: Seed
    augment: Literal[constants.AUGMENT_LEVELS]
    grad_clip: NonNegative = 0.0
    accumulate_steps: Count = 1
    patience: CountOrZero = 0
    init: Literal[constants.INIT_SCHEMES] = "default"
    num_workers: Annotated[int | str, auto_or(loader_workers)] = "auto"
    compile: Flag = False


# A model section may override any shared key; None = not overridden.
TrainOverrides = create_model(
    "TrainOverrides",
    __base__=Section,
    **{name: (info.rebuild_annotation() | None, None) for name, info in TrainKeys.model_fields.items()},
)


class ModelTraining(Section):
    """Training settings that only some models' sections hold; every model trains with these defaults
    unless its section sets them: ``encoder_weights`` (none | imagenet | a file path) and
    ``zero_init_residual`` (see :func:`pipeline.models.init.init_weights`)."""

    encoder_weights: Name = "none"
    zero_init_residual: Flag = False


class UNetSection(TrainOverrides):
    """``unet``: architecture options of :class:`pipeline.models.unet.UNet` and training overrides."""

    base_channels: Count
    bilinear: Flag


class ResNet34UNetSection(TrainOverrides, ModelTraining):
    """``resnet34_unet``: architecture options of :class:`pipeline.models.resnet34_unet.ResNet34UNet`,
    its encoder's initial weights and training overrides."""

    decoder_channels: Annotated[list[Count], Field(min_length=5, max_length=5)]
    bilinear: Flag


class Evaluate(Section):
    """``evaluate``: decision threshold on sigmoid(logit) (strictly between 0 and 1, or "auto"), TTA, batch."""

    threshold: Annotated[float | str, auto_or(probability)]
    tta: Literal[constants.TTA_MODES]
    batch_size: Count


class Export(Section):
    """``export``: ONNX opset (torch.onnx's exporter needs >= 18) and the parity check."""

    opset: Annotated[int, Field(strict=True, ge=18)]
    check_images: Count
    max_abs_diff: NonNegative


class Plot(Section):
    """``plot``: how many test images the overlay and worst-image figures show, and the draw's seed."""

    num_images: Count
    worst: Count
    seed: Seed


class Train(Section):
    """``train``: ``nproc`` data-parallel training processes on this machine (1 = one plain process;
    more run under torchrun, one a GPU, ``batch_size`` staying the global batch), and
    ``sync_batchnorm``: BatchNorm statistics over the global batch rather than each process's share
    (CUDA only; nothing to sync with one process)."""

    nproc: Count = 1
    sync_batchnorm: Flag = False


class ComputeKeys(Section):
    """Where and how the training and evaluate stages compute (top level, so ``dvc exp run -S
    precision=fp32`` works): ``device`` auto | cuda | cpu (auto = CUDA when usable); ``precision`` auto
    | fp32 | bf16 | fp16 (auto = bf16 where the device runs it natively, fp16 on older GPUs, else fp32;
    :func:`pipeline.core.device.choose_precision`); ``threads`` the CPU's intra-op threads, "auto" or
    a count >= 1 (:func:`pipeline.core.device.choose_threads`)."""

    device: Literal[constants.DEVICES] = "auto"
    precision: Literal[constants.PRECISIONS] = "auto"
    threads: Annotated[int | str, BeforeValidator(auto_or_count)] = "auto"


class Params(TrainKeys, ComputeKeys):
    """The whole params.yaml. ``task``: binary (pet vs background) or trimap (the pets' three trimap
    classes); a folder dataset's classes come from its classes.yaml instead."""

    data: Data
    split: Split
    task: Literal[constants.TASKS] = "binary"
    image_size: Annotated[int, Field(strict=True, ge=SIZE_MULTIPLE)]
    preprocess: Preprocess
    augmentation: AugmentOptions = AugmentOptions()
    train: Train = Train()
    unet: UNetSection
    resnet34_unet: ResNet34UNetSection
    evaluate: Evaluate
    export: Export
    plot: Plot

    @model_validator(mode="after")
    def _cross_checks(self):
        if self.image_size % SIZE_MULTIPLE:
            raise ValueError(f"image_size must be a multiple of {SIZE_MULTIPLE}, got {self.image_size}")
        for model in constants.MODELS:
            merged = self.merged(model)
            if merged["warmup_epochs"] > merged["epochs"] - 1:
                raise ValueError(
                    f"{model}: warmup_epochs ({merged['warmup_epochs']}) must leave at least one epoch of "
                    f"the schedule (epochs: {merged['epochs']})"
                )
        return self

    def merged(self, model: str) -> dict[str, Any]:
        """The shared training keys with ``model``'s section's overrides applied."""
        own = getattr(self, model)
        shared = {name: getattr(self, name) for name in TrainKeys.model_fields}
        return {name: shared[name] if getattr(own, name) is None else getattr(own, name) for name in shared}


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


# Each registered model has a section of its name; a model without one fails here, at import.
MODEL_SECTIONS: dict[str, type[Section]] = {name: Params.model_fields[name].annotation for name in constants.MODELS}


class DownloadInputs(Section):
    """What decides the download stage's output: ``data.source`` and only the keys that source uses.

    Written by the validate stage (:func:`download_inputs`) and read by the download stage, so that
    changing, say, ``data.synthetic_seed`` while the source is the official dataset reruns nothing.
    """

    source: Name
    url: Name | None = None
    synthetic_images: Annotated[int, Field(strict=True, ge=4)] | None = None
    synthetic_seed: Seed | None = None
    synthetic_classes: Annotated[int, BeforeValidator(class_count)] | None = None


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
