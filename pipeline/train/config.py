"""The training view of params.yaml: one model's settings after its section's overrides, and the
whole of one training run (:class:`RunConfig`) that :func:`pipeline.train.fit.fit` takes."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.device import Compute
from pipeline.core.errors import UserError
from pipeline.core.params import MODEL_SECTIONS, AugmentOptions, ModelTraining, Params, TrainKeys
from pipeline.data.classes import BINARY_PETS, Classes
from pipeline.data.geometry import Resize


class TrainConfig(TrainKeys, ModelTraining):
    """Training hyperparameters for one model, after its section's overrides are applied: the shared
    training keys, the per-model training keys and the ``augmentation`` options, with the schema's
    types, ranges and defaults (:mod:`pipeline.core.params`, which documents each key).

    ``epochs`` and ``batch_size`` count passes and images; ``lr`` is the peak learning rate. Built by
    :func:`train_config`; tests build one directly from the keys without defaults.
    """

    augmentation: AugmentOptions = AugmentOptions()

    def fingerprint_inputs(self) -> dict[str, Any]:
        """The settings that decide the trained weights, as JSON data: all but ``num_workers`` and
        ``compile``, which only change speed (a compiled step gives eager's losses within float rounding:
        tests/train/test_fit.py, bench/compile.py), so a run killed with one resumes with the other."""
        return self.model_dump(mode="json", exclude={"num_workers", "compile"})


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


@dataclass(frozen=True)
class RunConfig:
    """One training run, decided before it starts (the training stage builds it once from params.yaml,
    the cache and the machine).

    ``model`` is a registry name and ``arch`` its architecture kwargs (:func:`train_config`; the
    checkpoint stores both, so the dict must stay JSON-able and is not changed after building);
    ``train`` the hyperparameters; ``checkpoint`` the .pt file the best epoch's weights go to;
    ``classes`` the task's classes (1 logit for a binary task, C for C classes); ``compute`` the
    device and autocast dtype (the CPU in fp32 by default); ``sync_batchnorm`` BatchNorm statistics
    over the global batch when several processes train (CUDA only); ``progress`` whether this
    process shows bars and epoch lines (rank 0 only, whatever it says). ``resize`` is the scale the cache's
    photos were taken at (None: squashed to the train images' square) and ``image_size`` the side of the
    training crops in pixels (None: the train images' side); ``crops_per_image`` how many crops each train
    image gives an epoch; ``class_weights`` the cross-entropy's weight of each class (None: unweighted);
    ``augment_on`` where the geometric augmentation runs, "workers" or "device" (``train.augment_on`` once
    decided, :func:`pipeline.data.device_augment.augment_on`).
    """

    model: str
    arch: dict[str, Any]
    train: TrainConfig
    checkpoint: Path
    classes: Classes = BINARY_PETS
    compute: Compute = Compute()
    sync_batchnorm: bool = False
    progress: bool = True
    resize: Resize | None = None
    image_size: int | None = None
    crops_per_image: int = 1
    class_weights: tuple[float, ...] | None = None
    augment_on: str = "workers"
