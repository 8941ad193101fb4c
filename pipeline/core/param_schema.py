"""The params.yaml schema (pydantic): every key, its type, range, default and description.

Each section forbids keys it does not know, so a misspelt key (``learning_rate``, ``evaluate.treshold``)
fails instead of silently doing nothing. Each key's description lives in the schema alone: ``petseg
params`` prints them, and docs/training.md's table of every key is that command's output. This module
holds the file's root, :class:`Params`, and the sections of the data, evaluate, export and plot stages;
the training keys and the model sections are in :mod:`pipeline.core.param_training`. The allowed names
(losses, schedules, ...) come from :mod:`pipeline.core.constants`, which the registries that implement
them use too, so the schema imports no torch code. Reading and checking a params file is
:mod:`pipeline.core.params`.
"""

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from pipeline.core import constants
from pipeline.core.constants import SIZE_MULTIPLE
from pipeline.core.param_training import AugmentOptions, ResNet34UNetSection, Train, TrainKeys, UNetSection
from pipeline.core.param_types import (
    AutoOrCount,
    AutoOrProbability,
    AutoOrSide,
    ClassCount,
    Count,
    Fraction,
    Name,
    NonNegative,
    Section,
    Seed,
    WindowSide,
    allowed,
)

SyntheticImages = Annotated[int, Field(strict=True, ge=4)]


class Data(Section):
    """``data``: where the dataset comes from, and how many bad pairs preprocess tolerates."""

    source: Annotated[Name, allowed("oxford-iiit-pet, synthetic or a folder path")] = Field(
        description="where the dataset comes from: `oxford-iiit-pet` (the official tarballs from `data.url`), "
        "`synthetic` (generated pet-like images, for offline demos and tests) or a local folder (the official "
        "layout, a folder holding images.tar.gz and annotations.tar.gz, or images/ + masks/ + classes.yaml: "
        "docs/data.md)"
    )
    url: Name = Field(description="where `oxford-iiit-pet` downloads the official tarballs from")
    synthetic_images: SyntheticImages = Field(200, description="how many images the `synthetic` source generates")
    synthetic_seed: Seed = Field(0, description="the seed the `synthetic` source draws its images with")
    synthetic_classes: ClassCount = Field(
        0, description="`synthetic` only: 0 = pet-like images with trimaps; C >= 2 = a folder dataset of C classes"
    )
    max_bad_fraction: Fraction = Field(
        0.01,
        description="preprocess fails when more than this share of the listed pairs is skipped (undecodable, "
        "wrong size, bad trimap, missing: docs/data.md#bad-data)",
    )


class Split(Section):
    """``split``: how the dataset's pairs are drawn into train, valid and test."""

    valid_fraction: Fraction = Field(
        description="share of the official trainval list (or of a folder dataset's pairs left after test) held "
        "out as valid"
    )
    seed: Seed = Field(description="the seed of the draws")
    test_fraction: Fraction = Field(
        0.2, description="a folder dataset without splits/: share of its pairs drawn for test first"
    )


class Preprocess(Section):
    """``preprocess``: the scale photos are cached at, what the trimap's boundary band counts as, and how many
    processes decode the pairs."""

    resize: Literal[constants.RESIZE_MODES] = Field(
        "square",
        description="`square`: every photo squashed to `image_size` x `image_size`; `keep_aspect`: its short side "
        "scaled to `preprocess.short_side` with the aspect kept, training on random `image_size` crops and "
        "evaluating whole images (docs/data.md#scale-and-aspect)",
    )
    short_side: AutoOrSide = Field(
        "auto",
        description="`keep_aspect` only: the short side of every cached photo, in pixels; `auto` = `image_size`",
    )

    boundary: Literal[constants.BOUNDARY_POLICIES] = Field(
        description="`task: binary` on the pets: what the trimap's boundary band (value 3) counts as; `ignore` "
        "makes it the void label (255 in the masks: in no loss and no metric, at image size and at native size)"
    )
    workers: AutoOrCount = Field(
        "auto",
        description="processes decoding the pairs into the cache: `auto` = one per CPU; the cache is the same "
        "for any count",
    )


class Evaluate(Section):
    """``evaluate``: the decision threshold, test-time augmentation and batch of the evaluate stages."""

    threshold: AutoOrProbability = Field(
        description="a pixel is pet when sigmoid(logit) > threshold (binary task); `auto` = the value in "
        "0.05..0.95 with the best native Dice on the valid split"
    )
    tta: Literal[constants.TTA_MODES] = Field(
        description="test-time augmentation: `hflip` takes the mean of the logits of the image and its mirror"
    )
    batch_size: Count = Field(description="images per forward pass")
    window: WindowSide = Field(
        0,
        description="`0`: each image whole (padded to a multiple of 32); else the side in pixels (a multiple of "
        "32) of a sliding window, half a window apart, whose logits are averaged where they overlap: for images "
        "too large to take whole",
    )


class Export(Section):
    """``export``: the ONNX opset and the parity check against PyTorch."""

    opset: Annotated[int, Field(strict=True, ge=18)] = Field(
        description="the ONNX opset (torch.onnx's exporter needs >= 18)"
    )
    check_images: Count = Field(description="test images the ONNX Runtime parity check runs on")
    max_abs_diff: NonNegative = Field(
        description="the largest logit difference between ONNX Runtime and PyTorch the export stage accepts"
    )


class Plot(Section):
    """``plot``: how many test images the overlay and worst-image figures show, and the draw's seed."""

    num_images: Count = Field(description="test images in plots/overlays.png, drawn with `plot.seed`")
    worst: Count = Field(description="worst test images per model in plots/worst.png")
    seed: Seed = Field(description="the seed of the draw of plots/overlays.png's images")


class ComputeKeys(Section):
    """Where and how the training and evaluate stages compute (top level, so ``dvc exp run -S
    precision=fp32`` works); :mod:`pipeline.core.device` decides what ``auto`` means."""

    device: Literal[constants.DEVICES] = Field(
        "auto",
        description="`auto`: CUDA when usable, else the CPU; `cuda`: fail in one line when CUDA is unusable (no "
        "PyTorch CUDA build, no GPU visible, a driver too old, a first CUDA call that fails) instead of falling "
        "back; `cpu`",
    )
    precision: Literal[constants.PRECISIONS] = Field(
        "auto",
        description="autocast dtype; `auto`: bf16 where the device computes it natively (CUDA sm80+, a CPU with "
        "AVX512-BF16 or AMX), fp16 with a grad scaler on older CUDA GPUs, else fp32; `bf16` and `fp32` are taken "
        "as asked (bf16 where it is emulated runs, slowly); `fp16` needs CUDA; losses and metrics are fp32 always",
    )
    threads: AutoOrCount = Field(
        "auto",
        description="the CPU's intra-op threads: `auto` keeps torch's default (one per core); on a machine shared "
        "with other jobs, fewer (docs/training.md#device-precision-and-threads)",
    )


class Params(ComputeKeys, TrainKeys):
    """The whole params.yaml: the shared training and compute keys, the task, the image size and a
    section per stage and per model."""

    task: Literal[constants.TASKS] = Field(
        "binary",
        description="`auto`: a folder dataset's classes from its classes.yaml, the pets' `binary`; `binary`: the "
        "pets' pet vs background, or a folder dataset of two classes; `trimap`: the pets' background, pet and "
        "boundary",
    )
    image_size: Annotated[
        int, Field(strict=True, ge=SIZE_MULTIPLE), allowed(f"a multiple of {SIZE_MULTIPLE}, >= {SIZE_MULTIPLE}")
    ] = Field(description="side of the square the photos are resized to for training and the cache, in pixels")
    data: Data
    split: Split
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
            if merged["loss"] == "dice" and merged["class_weights"] != "none":
                raise ValueError(
                    f"{model}: class_weights weigh the cross-entropy, and loss: dice has none; use ce_dice or ce, "
                    "or class_weights: none"
                )
            if merged["warmup_epochs"] > merged["epochs"] - 1:
                raise ValueError(
                    f"{model}: warmup_epochs ({merged['warmup_epochs']}) must leave at least one epoch of "
                    f"the schedule (epochs: {merged['epochs']})"
                )
        return self

    @property
    def cache_side(self) -> int:
        """The side of :class:`pipeline.data.geometry.Resize` in pixels: ``image_size`` under ``square``, else
        ``preprocess.short_side`` (``auto``: ``image_size``)."""
        side = self.preprocess.short_side
        return self.image_size if self.preprocess.resize == "square" or side == "auto" else side

    def merged(self, model: str) -> dict[str, Any]:
        """The shared training keys with ``model``'s section's overrides applied."""
        own = getattr(self, model)
        shared = {name: getattr(self, name) for name in TrainKeys.model_fields}
        return {name: shared[name] if getattr(own, name) is None else getattr(own, name) for name in shared}


# Each registered model has a section of its name; a model without one fails here, at import.
MODEL_SECTIONS: dict[str, type[Section]] = {name: Params.model_fields[name].annotation for name in constants.MODELS}
