"""The models' test results side by side: the one DVC metrics file of the test scores.

`dvc exp show` orders its columns by metrics file, then by key, and collapses columns from the right
when the terminal is too narrow. So the file holds each headline score for every model before the
next score (``dice.unet``, ``dice.resnet34_unet``, ``iou.unet``, ...): the models' test Dice are its
first two metric columns, or, for a multi-class task, their test mIoU, and each class's IoU after the
headline scores.
"""

from pipeline.core.constants import CLASS_IOU


def side_by_side(metrics: dict[str, dict], keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """``{score: {model: value}}`` for each score of ``keys`` (the task's
    :func:`~pipeline.core.constants.headline_keys`), from each model's measured
    metrics (``{model: metrics/evaluation/<model>/scores.json}``), in the models' order."""
    return {key: {model: values[key] for model, values in metrics.items()} for key in keys}


def class_ious(iou: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float | None]]:
    """``{iou_<class>: {model: value}}`` (:data:`~pipeline.core.constants.CLASS_IOU`) from each model's test IoU
    per class (``{model: {class name: value in [0, 1], or None where the class is in neither the truth nor the
    prediction}}``, :func:`pipeline.report.class_figures.per_class`), classes in their order."""
    names = next(iter(iou.values()), {})
    return {f"{CLASS_IOU}{name}": {model: values[name] for model, values in iou.items()} for name in names}
