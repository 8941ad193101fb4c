"""Where the plot stage finds each model's inputs in the folders it is given, and what it names its figures.

The evaluate stages write ``<evaluation>/<model>.json``, ``<model>_per_image.csv``, ``<model>_per_breed.csv``
and ``<predictions>/<model>.npz``, and training ``<live>/<model>/`` (dvc.yaml gives those paths); the plot
stage takes the folders and the model names. Torch-free, so ``petseg diff`` can read it for its links.
"""

from dataclasses import dataclass
from pathlib import Path

# The plot stage's figures in its --plots folder, by what they show.
FIGURES = {
    "curves": "learning_curves.png",
    "overlays": "overlays.png",
    "worst": "worst.png",
    "distribution": "dice_distribution.png",
    "breeds": "per_breed.png",
    "scores": "test_dice.png",
    "confusion": "confusion.png",
    "per_class": "per_class_iou.png",
}


@dataclass(frozen=True)
class ModelFiles:
    """One model's inputs to the plot stage: its dvclive folder, metrics .json, per-image and per-breed
    .csv and predictions .npz."""

    live: Path
    metrics: Path
    per_image: Path
    per_breed: Path
    predictions: Path


def model_files(model: str, live: Path, evaluation: Path, predictions: Path) -> ModelFiles:
    """Where ``model``'s inputs lie in the ``live``, ``evaluation`` and ``predictions`` folders."""
    evaluation = Path(evaluation)
    return ModelFiles(
        live=Path(live) / model,
        metrics=evaluation / f"{model}.json",
        per_image=evaluation / f"{model}_per_image.csv",
        per_breed=evaluation / f"{model}_per_breed.csv",
        predictions=Path(predictions) / f"{model}.npz",
    )
