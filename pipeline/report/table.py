"""The models' test results side by side: the one DVC metrics file of the test scores.

`dvc exp show` orders its columns by metrics file, then by key, and collapses columns from the right
when the terminal is too narrow. So the file holds each headline score for every model before the
next score (``dice.unet``, ``dice.resnet34_unet``, ``iou.unet``, ...): the models' test Dice are its
first two metric columns.
"""

from pipeline.core.constants import HEADLINE_METRICS


def side_by_side(metrics: dict[str, dict]) -> dict[str, dict[str, float]]:
    """``{score: {model: value}}`` for each score of :data:`~pipeline.core.constants.HEADLINE_METRICS`,
    from each model's measured metrics (``{model: metrics/<model>.json}``), in the models' order."""
    return {key: {model: values[key] for model, values in metrics.items()} for key in HEADLINE_METRICS}
