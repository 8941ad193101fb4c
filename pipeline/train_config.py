"""The training view of params.yaml: one model's settings after its section's overrides."""

from dataclasses import dataclass, fields
from typing import Any

from pipeline.errors import UserError
from pipeline.params import MODEL_SECTIONS, AugmentOptions, Params, TrainKeys

# Keys of a model's section that are training settings rather than architecture options.
MODEL_TRAIN_KEYS = ("encoder_weights", "zero_init_residual")


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
    augmentation: AugmentOptions = AugmentOptions()

    def fingerprint_inputs(self) -> dict[str, Any]:
        """The settings that decide the trained weights: all but ``num_workers``, which only changes speed."""
        inputs = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "num_workers"}
        inputs["augmentation"] = self.augmentation.model_dump(mode="json")
        return inputs


def train_config(params: Params, model: str) -> tuple[TrainConfig, dict[str, Any]]:
    """Split ``params`` into the training config for ``model`` and the model's architecture kwargs.

    Raises UserError naming the valid models if ``model`` has no section.
    """
    if model not in MODEL_SECTIONS:
        raise UserError(f"no params section for model {model!r}; valid: {', '.join(MODEL_SECTIONS)}")
    own = getattr(params, model)
    own_keys = [name for name in type(own).model_fields if name not in TrainKeys.model_fields]
    model_train = {name: getattr(own, name) for name in own_keys if name in MODEL_TRAIN_KEYS}
    cfg = TrainConfig(**params.merged(model), **model_train, augmentation=params.augmentation)
    arch = {name: getattr(own, name) for name in own_keys if name not in MODEL_TRAIN_KEYS}
    return cfg, arch
