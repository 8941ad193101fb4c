"""The training keys of params.yaml: the shared ones at the top level, each model's section (its
architecture options, and any shared key overridden for that model alone), the augmentation options
and data-parallel training. Part of the schema (:mod:`pipeline.core.param_schema`); the training
stage's view of them is :class:`pipeline.train.config.TrainConfig`.
"""

from typing import Annotated, Any, Literal

from pydantic import Field, create_model, model_validator

from pipeline.core import constants
from pipeline.core.param_types import (
    AutoOrFlag,
    AutoOrWorkers,
    ClassWeights,
    Count,
    CountOrZero,
    Endpoint,
    Flag,
    Fraction,
    Name,
    NonNegative,
    Number,
    Section,
    Seed,
    allowed,
)


class TrainKeys(Section):
    """Shared training keys (top level of params.yaml, so ``dvc exp run -S lr=3e-4`` works).

    Keys added after the first params.yaml have defaults that keep the first release's behaviour.
    """

    epochs: Count = Field(description="passes over the train split")
    batch_size: Count = Field(
        description="images per batch (the global batch of all processes when `train.nproc` or `train.nnodes` > 1)"
    )
    lr: Annotated[Number, Field(gt=0)] = Field(description="the peak learning rate of the schedule")
    weight_decay: NonNegative = Field(description="weight decay: AdamW's decoupled decay, or SGD's L2 term")
    optimizer: Literal[constants.OPTIMIZERS] = Field(
        "adamw", description="AdamW (decoupled weight decay) or SGD with heavy-ball `momentum`"
    )
    momentum: Fraction = Field(0.9, description="SGD's momentum (`adamw` ignores it)")
    scheduler: Literal[constants.SCHEDULERS] = Field(
        description="the lr schedule, stepped per optimiser step: `cosine` (to 0), `constant`, `onecycle` "
        "(torch's OneCycleLR, peak `lr`; also cycles momentum/β1), `plateau` (halve the lr after 3 epochs "
        "without a better valid score)"
    )
    warmup_epochs: NonNegative = Field(
        0.0,
        description="linear warmup from lr/steps to `lr` before `cosine`, `constant` or `plateau`, in epochs; "
        "sets the rise of `onecycle`; must leave at least one epoch of the schedule",
    )
    loss: Literal[constants.LOSSES] = Field(
        description="cross-entropy + soft Dice, soft Dice, or cross-entropy: the sigmoid form for a binary task, "
        "the softmax form for C classes (docs/training.md#tasks-and-losses)"
    )
    class_weights: ClassWeights = Field(
        "none",
        description="weights of the classes in the cross-entropy (a binary task: BCE's positive weight w1 / w0): "
        "`none`; `median_frequency` (Eigen & Fergus 2015: median class frequency / the class's, from the train "
        "split's pixel counts in metrics/data.json); or one weight per class, `[w0, w1, ...]`. The Dice term "
        "stays an unweighted mean over the classes present",
    )
    seed: Seed = Field(description="the seed of the initial weights, the data order and each sample's augmentation")
    augment: Literal[constants.AUGMENT_LEVELS] = Field(
        description="`none`, `flip` (random horizontal flip), or `full`: what the `augmentation` section says"
    )
    grad_clip: NonNegative = Field(
        0.0, description="clip the global gradient norm to this (after unscaling under fp16); 0 = off"
    )
    accumulate_steps: Count = Field(
        1, description="batches per optimiser step: the effective batch is `batch_size` x `accumulate_steps`"
    )
    ema: Annotated[Number, Field(ge=0, lt=1)] = Field(
        0.0,
        description="exponential moving average of the weights, updated after every optimiser step: 0 = off, else "
        "its decay (e.g. 0.999). Validation, the best epoch's choice and the checkpoint use the averaged weights; "
        "BatchNorm's running statistics are averaged too. The average spans about 1 / (1 - decay) optimiser steps, "
        "so keep that well below the run's steps (Polyak & Juditsky 1992; torch.optim.swa_utils.AveragedModel with "
        "get_ema_multi_avg_fn, use_buffers=True; docs/training.md#weight-averaging)",
    )
    patience: CountOrZero = Field(
        0,
        description="stop after this many epochs without a better valid score (Dice, or mIoU for C classes); "
        "0 = off; `live/<model>/metrics.json` records `last_epoch`",
    )
    init: Literal[constants.INIT_SCHEMES] = Field(
        "default",
        description="`default`: PyTorch's; `kaiming`: He-normal convolutions (fan-out) and BatchNorm 1/0, as "
        "torchvision's ResNet",
    )
    num_workers: AutoOrWorkers = Field(
        "auto",
        description="DataLoader worker processes: `auto` = min(8, CPUs this process may run on / `train.nproc`) on "
        "CUDA, 0 on a CPU; "
        "each sample's augmentation is seeded from the run seed, so results do not depend on it",
    )
    compile: AutoOrFlag = Field(
        False,
        description="`torch.compile` the model (inductor, default mode; speed only, the first steps pay the compile "
        "time): `auto` = on CUDA, off on a CPU, where it did not pay (docs/performance.md#torchcompile)",
    )


# A model section may override any shared key; None = not overridden.
TrainOverrides = create_model(
    "TrainOverrides",
    __base__=Section,
    __doc__="any shared training key, for this model only (e.g. `resnet34_unet: {lr: 3e-4}`)",
    **{name: (info.rebuild_annotation() | None, None) for name, info in TrainKeys.model_fields.items()},
)


class ModelTraining(Section):
    """Training settings that only some models' sections hold; every model trains with these defaults
    unless its section sets them (see :func:`pipeline.models.init.init_weights`)."""

    encoder_weights: Annotated[Name, allowed("none, imagenet or a file path")] = Field(
        "none",
        description="the encoder's initial weights: `none` (random), `imagenet` (torchvision's IMAGENET1K_V1, "
        "downloaded into torch.hub's cache) or the path of a saved torchvision `resnet34` state dict (offline; "
        "the encoder's parameter names are torchvision's, so the file loads as is). The file is not a DVC "
        "dependency: after replacing it, run `dvc repro -f train@resnet34_unet`",
    )
    zero_init_residual: Flag = Field(
        False,
        description="zero-init the last BatchNorm of each residual block, so that each starts as the identity "
        "(Goyal et al. 2017)",
    )


Bilinear = Annotated[
    Flag, Field(description="upsample by bilinear interpolation + a 1x1 conv instead of a transposed conv")
]


class UNetSection(TrainOverrides):
    """``unet``: architecture options of :class:`pipeline.models.unet.UNet` and training overrides."""

    base_channels: Count = Field(description="width of the first level, doubled at each of the four downsamplings")
    bilinear: Bilinear


class ResNet34UNetSection(TrainOverrides, ModelTraining):
    """``resnet34_unet``: architecture options of :class:`pipeline.models.resnet34_unet.ResNet34UNet`,
    its encoder's initial weights and training overrides."""

    decoder_channels: Annotated[list[Count], Field(min_length=5, max_length=5)] = Field(
        description="widths of the five decoder steps, deepest first"
    )
    bilinear: Bilinear


class AugmentOptions(Section):
    """What the "full" augmentation does (``augmentation`` section); the defaults are the original "full".

    Raises pydantic's ValidationError (a ValueError) unless 0 < lo <= hi <= 1 for ``crop_scale``,
    0 <= ``degrees`` <= 180 and ``jitter`` >= 0.
    """

    hflip: Flag = Field(True, description="random horizontal flip, with probability 0.5")
    vflip: Flag = Field(
        False, description="random vertical flip, with probability 0.5 (off by default: pets are rarely upside down)"
    )
    degrees: Annotated[Number, Field(ge=0, le=180)] = Field(
        0.0,
        description="random rotation by an angle uniform in [-degrees, degrees], in degrees; the corners it "
        "uncovers count in no loss; 0 = off",
    )
    crop_scale: Annotated[tuple[Number, Number], allowed("[lo, hi], 0 < lo <= hi <= 1")] = Field(
        (0.5, 1.0), description="`preprocess.resize: square`: range of the area fraction of the random resized crop"
    )
    scale: Annotated[tuple[Number, Number], allowed("[lo, hi], 0 < lo <= hi")] = Field(
        (0.5, 2.0),
        description="`preprocess.resize: keep_aspect`: range of the random rescale of a cached photo before its "
        "`image_size` crop (mmsegmentation's ratio_range)",
    )
    jitter: NonNegative = Field(
        0.2,
        description="brightness, contrast and saturation strength: factors in [1 - jitter, 1 + jitter]; 0 = off",
    )

    @model_validator(mode="after")
    def _crop_scale_order(self):
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale must be two area fractions 0 < lo <= hi <= 1, got {[lo, hi]}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise ValueError(f"scale must be two factors 0 < lo <= hi, got {[lo, hi]}")
        return self


class Train(Section):
    """``train``: data-parallel training on one machine or several (docs/scaling.md)."""

    nproc: Count = Field(
        1,
        description="training processes on each machine: 1 = one plain process; more run under torchrun "
        "(DistributedDataParallel, one a GPU), `batch_size` staying the global batch (docs/scaling.md)",
    )
    nnodes: Count = Field(
        1,
        description="machines that train one model together, each running the training stage with the same "
        "code, params and data; more than 1 needs `train.rdzv_endpoint` (docs/scaling.md)",
    )
    rdzv_endpoint: Endpoint = Field(
        None,
        description="where the machines of `train.nnodes` > 1 meet: host:port of one of them, reachable from all "
        "(torchrun's c10d rendezvous); ignored on one machine",
    )
    crops_per_image: Count = Field(
        1,
        description="random crops drawn from each train image an epoch (each with its own augmentation), so a "
        "few large images still make an epoch of batches",
    )
    augment_on: Literal[constants.AUGMENT_ON] = Field(
        "auto",
        description="where flips, rotation and crops run: `workers` (per sample on the loader's workers), `device` "
        "(the train split copied to the training device as uint8 once, each batch warped there; the workers only "
        "draw each sample's parameters, the same draws for a seed) or `auto`: `device` on CUDA when the split "
        f"takes at most {constants.DEVICE_SPLIT_SHARE:.0%} of the free GPU memory, `{constants.CPU_AUGMENT_ON}` on "
        "a CPU (docs/performance.md)",
    )
    sync_batchnorm: Flag = Field(
        False,
        description="BatchNorm statistics over the global batch rather than each process's share (CUDA only; "
        "nothing to sync with one process)",
    )
    resume_every_s: NonNegative = Field(
        300,
        description="seconds between writes of the resume state, checked after each epoch (0 = every epoch); it "
        "is also written after the last epoch and on Ctrl-C / SIGTERM, so a rerun resumes after the last "
        "completed epoch",
    )

    @model_validator(mode="after")
    def _endpoint_for_machines(self):
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            raise ValueError(
                f"nnodes is {self.nnodes} but rdzv_endpoint is not set; set it to host:port of one of the machines"
            )
        return self

    @property
    def ranks(self) -> int:
        """Training processes over all machines: ``nnodes`` x ``nproc``, the divisor of the global batch."""
        return self.nnodes * self.nproc

    def fingerprint_inputs(self) -> dict[str, Any]:
        """The keys that decide the trained weights, as JSON data: the rank count, not how it is split into
        machines (rank r trains on the same samples either way), not where the machines meet, and not
        ``resume_every_s``, which changes only how often the state is written (so changing it keeps a state)."""
        kept = self.model_dump(mode="json", exclude={"nproc", "nnodes", "rdzv_endpoint", "resume_every_s"})
        return {**kept, "ranks": self.ranks}
