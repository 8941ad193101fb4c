"""The training view of params.yaml: one model's settings after its section's overrides."""

from typing import Any

from pipeline.core.errors import UserError
from pipeline.core.params import MODEL_SECTIONS, AugmentOptions, ModelTraining, Params, TrainKeys


class TrainConfig(TrainKeys, ModelTraining):
    """Training hyperparameters for one model, after its section's overrides are applied: the shared
    training keys, the per-model training keys and the ``augmentation`` options, with the schema's
    types, ranges and defaults (:mod:`pipeline.core.params`, which documents each key).

    ``epochs`` and ``batch_size`` count passes and images; ``lr`` is the peak learning rate. Built by
    :func:`train_config`; tests build one directly from the keys without defaults.
    """

    augmentation: AugmentOptions = AugmentOptions()

    def fingerprint_inputs(self) -> dict[str, Any]:
        """The settings that decide the trained weights, as JSON data: all but ``num_workers``, which
        only changes speed."""
        return self.model_dump(mode="json", exclude={"num_workers"})


def train_config(params: Params, model: str) -> tuple[TrainConfig, dict[str, Any]]:
    """Split ``params`` into the training config for ``model`` and the model's architecture kwargs
    (the keys of its section that are neither training keys nor training overrides).

    Raises UserError naming the valid models if ``model`` has no section.
    """
    if model not in MODEL_SECTIONS:
        raise UserError(f"no params section for model {model!r}; valid: {', '.join(MODEL_SECTIONS)}")
    own = getattr(params, model)
    training = TrainKeys.model_fields.keys() | ModelTraining.model_fields.keys()
    own_training = {name: getattr(own, name) for name in ModelTraining.model_fields if name in type(own).model_fields}
    cfg = TrainConfig(**params.merged(model), **own_training, augmentation=params.augmentation)
    arch = {name: getattr(own, name) for name in type(own).model_fields if name not in training}
    return cfg, arch
