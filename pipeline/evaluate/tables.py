"""What the evaluate stage writes from a :class:`~pipeline.evaluate.scoring.Scored`, for any task: the
headline scores, the details, the per-image and per-breed tables.

Every value comes from the per-image confusion matrices (:mod:`pipeline.evaluate.confusion`); a group of
images (the split, a species, a breed) is scored from its matrices summed. A task's score
(:func:`~pipeline.evaluate.confusion.task_metric`) is ``dice`` for two classes (class 1's Dice; an image
whose truth and prediction are both empty scores 1) and ``miou`` for more (over the classes present; an
image whose every pixel is ignored has none, NaN, and is left out of the means over images, which JSON
gets as null). The key names are the ones users know from `dvc exp show`:
:func:`~pipeline.core.constants.headline_keys`.
"""

import math

import numpy as np
import pandas as pd
import torch

from pipeline.core.constants import headline_keys
from pipeline.data.sources import any_known
from pipeline.evaluate.confusion import (
    class_counts,
    class_scores,
    foreground,
    per_image_mdice,
    per_image_miou,
    task_metric,
)
from pipeline.evaluate.scoring import Scored

# A per-class entry of metrics/evaluation/<model>/scores.json: these lists of class_scores, by class name.
PER_CLASS_KEYS = ("iou", "dice", "precision", "recall", "pixels")


def _mean(values: torch.Tensor) -> float:
    """Mean of the finite values (images with a score); NaN if there is none."""
    finite = values[torch.isfinite(values)]
    return float(finite.mean()) if len(finite) else math.nan


def image_scores(matrices: np.ndarray) -> dict[str, torch.Tensor]:
    """Each image's own scores float64 (N,) from its matrix int (N, C, C): for two classes ``pet_fraction``
    (class 1's share of the counted truth pixels, NaN where none is counted), ``dice`` and ``iou`` of class 1
    (1.0 where truth and prediction hold no class-1 pixel); for more, ``miou`` and ``dice`` (means over the
    classes present in the image; NaN where every pixel is ignored)."""
    m = torch.from_numpy(matrices)
    if matrices.shape[-1] == 2:
        scores = foreground(m)
        return {"pet_fraction": scores["fraction"], "dice": scores["dice"], "iou": scores["iou"]}
    return {"miou": per_image_miou(m), "dice": per_image_mdice(m)}


def summary(matrices: np.ndarray) -> dict[str, float]:
    """A group of images' scores from their matrices int (N, C, C). Two classes: ``dice``, ``iou`` (class 1,
    of the summed matrix; 1.0 for a group with no class-1 pixel in truth or prediction, every pixel ignored
    included), ``dice_per_image`` and its ``_median``, ``pixel_accuracy``. More: ``miou``, ``dice`` (mean
    class Dice), ``dice_per_image``, ``pixel_accuracy``, ``miou_per_image``, NaN where every pixel is
    ignored. Pixel accuracy is NaN then for either."""
    total = torch.from_numpy(matrices.sum(0))
    per_image = image_scores(matrices)
    counted = bool(total.sum())
    accuracy = class_scores(total)["pixel_accuracy"] if counted else math.nan
    if matrices.shape[-1] == 2:
        scores = foreground(total)
        return {
            "dice": float(scores["dice"]),
            "iou": float(scores["iou"]),
            "dice_per_image": _mean(per_image["dice"]),
            "dice_per_image_median": float(np.median(per_image["dice"].numpy())),
            "pixel_accuracy": accuracy,
        }
    scores = class_scores(total) if counted else {"miou": math.nan, "mdice": math.nan}
    return {
        "miou": scores["miou"],
        "dice": scores["mdice"],
        "dice_per_image": _mean(per_image["dice"]),
        "pixel_accuracy": accuracy,
        "miou_per_image": _mean(per_image["miou"]),
    }


def _json(value: float) -> float | None:
    return None if isinstance(value, float) and math.isnan(value) else value


def headline(scored: Scored) -> dict[str, float | None]:
    """The task's :func:`headline_keys` but the training's two, at each photo's own size but
    ``<score>_at_image_size`` (at the cache's square size, against the resized masks)."""
    metric = task_metric(scored.native.shape[-1])
    values = summary(scored.native) | {f"{metric}_at_image_size": summary(scored.at_size)[metric]}
    return {key: _json(values[key]) for key in headline_keys(scored.native.shape[-1]) if key in values}


def details(scored: Scored, names: tuple[str, ...], species: list[str]) -> dict:
    """What else the matrices say, after the headline in ``metrics/evaluation/<model>/scores.json``, at native
    size unless said: ``per_class`` {name: {iou, dice, precision, recall, pixels}} in class order (None where a
    score is undefined: :func:`~pipeline.evaluate.confusion.class_scores`), the task's other scores of
    :func:`summary`, ``at_image_size`` (those at the cache's size), ``species`` {name: {<score>,
    <score>_per_image, images}} where any image's species is known
    (:func:`~pipeline.data.sources.any_known`: the pets, not a folder dataset) and ``images``."""
    keys = headline_keys(len(names))
    total = torch.from_numpy(scored.native.sum(0))
    scores = class_scores(total) if total.sum() else {key: [None] * len(names) for key in PER_CLASS_KEYS}
    per_class = {name: {key: scores[key][c] for key in PER_CLASS_KEYS} for c, name in enumerate(names)}
    at_size = summary(scored.at_size)
    metric = task_metric(len(names))
    return {
        "per_class": per_class,
        **{key: _json(value) for key, value in summary(scored.native).items() if key not in keys},
        "at_image_size": {key: _json(value) for key, value in at_size.items() if key != metric},
        **({"species": _species(scored.native, species)} if any_known(species) else {}),
        "images": len(scored.native),
    }


def _species(matrices: np.ndarray, species: list[str]) -> dict[str, dict]:
    metric = task_metric(matrices.shape[-1])
    names, by_species = np.array(species), {}
    for name in sorted(set(species)):
        group = summary(matrices[names == name])
        by_species[name] = {
            metric: _json(group[metric]),
            f"{metric}_per_image": _json(group[f"{metric}_per_image"]),
            "images": int((names == name).sum()),
        }
    return by_species


def per_image_table(
    scored: Scored, names: tuple[str, ...], stems: list[str], breeds: list[str], species: list[str]
) -> pd.DataFrame:
    """One row per image, at native resolution: stem, breed, species, width, height (pixels), the image's
    :func:`image_scores`, then the counts they come from (pixels): ``tp``, ``fp``, ``fn`` of class 1 for
    two classes, ``tp_<name>``, ``fp_<name>``, ``fn_<name>`` of each class for more. With the counts a
    comparison recomputes the dataset-level score of any subset of images (``petseg diff``'s bootstrap)."""
    shapes = scored.predictions.shapes
    columns = {"stem": stems, "breed": breeds, "species": species, "width": shapes[:, 1], "height": shapes[:, 0]}
    columns |= {name: np.asarray(values) for name, values in image_scores(scored.native).items()}
    tp, fp, fn = (t.numpy() for t in class_counts(torch.from_numpy(scored.native)))
    if len(names) == 2:
        return pd.DataFrame(columns | {"tp": tp[:, 1], "fp": fp[:, 1], "fn": fn[:, 1]})
    for c, name in enumerate(names):
        columns |= {f"tp_{name}": tp[:, c], f"fp_{name}": fp[:, c], f"fn_{name}": fn[:, c]}
    return pd.DataFrame(columns)


def per_breed_table(scored: Scored, per_image: pd.DataFrame) -> pd.DataFrame | None:
    """One row per breed: breed, species, images, the task's score within the breed (its images' matrices
    summed; NaN if all its pixels are ignored) and ``<score>_per_image`` (the mean of its images' own scores);
    sorted by the score, worst first. None where no image's breed is known
    (:func:`~pipeline.data.sources.any_known`: a folder dataset, whose one "unknown" row would only repeat the
    test score)."""
    if not any_known(per_image["breed"]):
        return None
    metric = task_metric(scored.native.shape[-1])
    rows = []
    for (breed, species), group in per_image.groupby(["breed", "species"], sort=True):
        s = summary(scored.native[group.index.to_numpy()])
        rows.append((breed, species, len(group), s[metric], s[f"{metric}_per_image"]))
    table = pd.DataFrame(rows, columns=["breed", "species", "images", metric, f"{metric}_per_image"])
    return table.sort_values([metric, "breed"], kind="stable").reset_index(drop=True)
