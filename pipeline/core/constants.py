"""Values several packages need, each defined once and importable without torch.

The names a param may choose among (models, losses, optimisers, schedules, augmentation levels,
init schemes, TTA modes, tasks, boundary policies, devices, precisions) are spelt here, and both the params schema
(:mod:`pipeline.core.params`) and the registries that implement them (``MODELS`` in
:mod:`pipeline.models.registry`, ``BINARY_LOSSES`` and ``MULTICLASS_LOSSES`` in :mod:`pipeline.train.losses`,
...) are built from these tuples, so a name cannot be valid in one and unknown to the other.
"""

# Registry names of the architectures; each has a section of the same name in params.yaml.
MODELS = ("unet", "resnet34_unet")
# Cross-entropy + Dice, Dice, cross-entropy: the cross-entropy is the sigmoid (binary) one for a model with
# one logit and the softmax one for C logits, so one name serves both kinds of task.
LOSSES = ("ce_dice", "dice", "ce")
OPTIMIZERS = ("adamw", "sgd")
SCHEDULERS = ("cosine", "constant", "onecycle", "plateau")
AUGMENT_LEVELS = ("none", "flip", "full")
# Where the geometric augmentation runs: per sample on the loader's workers, or batch-wise on the training
# device with the train split kept there (pipeline.data.device_augment); auto picks.
AUGMENT_ON = ("auto", "device", "workers")
# `auto` puts the split on a GPU if it takes at most this share of the free memory: the rest is for the model,
# its activations and the optimiser (a few GB for the ResNet34-UNet at batch 16, 256 px).
DEVICE_SPLIT_SHARE = 0.25
# `auto` on a CPU: the faster path at the README's CPU settings in bench/augment.py (docs/performance.md).
CPU_AUGMENT_ON = "workers"
INIT_SCHEMES = ("default", "kaiming")
TTA_MODES = ("none", "hflip")
DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
# What is segmented: `auto` takes a folder dataset's classes from its classes.yaml (the pets: binary); `binary`
# is pet vs background (a folder dataset of exactly two classes); `trimap` the pets' trimap's three classes.
TASKS = ("auto", "binary", "trimap")
# How photos are scaled (pipeline.data.geometry): squashed to a square, or the short side set, aspect kept.
RESIZE_MODES = ("square", "keep_aspect")
# What the trimap's boundary band (value 3, dataset README) counts as.
BOUNDARY_POLICIES = ("pet", "background", "ignore")

# The test scores a reviewer compares between experiments, per model, in this order: the evaluate stage
# writes them first in metrics/<model>.json, and the plot stage gathers them, both models side by side
# key by key, into the one DVC metrics file of the test results (`dvc exp show`, `dvc metrics diff`).
HEADLINE_METRICS = ("dice", "iou", "dice_per_image", "dice_at_image_size", "best_valid_dice", "best_epoch")
# The same for a multi-class task (C > 2 classes, argmax of C logits): mIoU first (the usual multi-class
# headline), then the mean class Dice, the mean of each image's mean class Dice, the mIoU at the cache's
# square size, the pixel accuracy, and the training's best valid mIoU and its epoch.
MULTICLASS_HEADLINE_METRICS = (
    "miou",
    "dice",
    "dice_per_image",
    "miou_at_image_size",
    "pixel_accuracy",
    "best_valid_miou",
    "best_epoch",
)


def headline_keys(num_classes: int) -> tuple[str, ...]:
    """The test scores a reviewer compares for a task of ``num_classes`` classes: :data:`HEADLINE_METRICS`
    for two, :data:`MULTICLASS_HEADLINE_METRICS` for more (the last two, the training's best valid score and
    epoch, come from the checkpoint)."""
    return HEADLINE_METRICS if num_classes == 2 else MULTICLASS_HEADLINE_METRICS


# Both architectures downsample five times (2**5), so image height and width in pixels must divide by it.
SIZE_MULTIPLE = 32
# A pixel is pet when sigmoid(logit) > this probability, unless evaluate.threshold or --threshold says otherwise:
# the Bayes decision for calibrated probabilities under equal costs.
DEFAULT_THRESHOLD = 0.5
# How messages and reports name the score that picks a checkpoint and judges a change: the Dice of class
# 1 for a binary task, the mIoU for a multi-class one.
SCORE_LABELS = {"dice": "Dice", "miou": "mIoU"}
# A multi-class task's summary (metrics/test.json) also holds each class's test IoU under this prefix and the
# class's name (``iou_boundary``), so that `dvc exp show`, `petseg seeds` and `petseg diff` see a thin class.
CLASS_IOU = "iou_"


def score_label(metric: str) -> str:
    """How reports name ``metric``: a key of :data:`SCORE_LABELS`, or a class's IoU (``iou_boundary`` →
    "IoU boundary"). Raises KeyError for any other key."""
    if metric.startswith(CLASS_IOU):
        return f"IoU {metric[len(CLASS_IOU) :]}"
    return SCORE_LABELS[metric]
