"""The models' test results side by side: the one DVC metrics file of the test scores.

`dvc exp show` orders its columns by metrics file, then by key, and collapses columns from the right
when the terminal is too narrow. So the file holds each headline score for every model before the
next score (``dice.unet``, ``dice.resnet34_unet``, ``iou.unet``, ...): the models' test Dice are its
first two metric columns, or, for a multi-class task, their test mIoU.
"""


def side_by_side(metrics: dict[str, dict], keys: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """``{score: {model: value}}`` for each score of ``keys`` (the task's
    :func:`~pipeline.core.constants.headline_keys`), from each model's measured
    metrics (``{model: metrics/evaluation/<model>/scores.json}``), in the models' order."""
    return {key: {model: values[key] for model, values in metrics.items()} for key in keys}
