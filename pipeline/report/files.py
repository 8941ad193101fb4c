"""Where the plot stage finds each model's inputs in the folders it is given, and what it names its figures.

Each evaluate stage writes its model's folder ``<evaluation>/<model>/``: ``scores.json``, ``per_image.csv``
and, for a dataset with breeds (the pets), ``per_breed.csv``; and ``<predictions>/<model>.npz``. Training
writes ``<live>/<model>/`` (dvc.yaml gives those paths); the plot stage takes the folders and the model
names. Torch-free, so ``petseg diff`` can read it for its links.
"""

from dataclasses import dataclass
from pathlib import Path

# The plot stage's figures in its --plots folder, by what they show. Names hold no metric: the figures of a
# binary task show Dice and those of a multi-class task mIoU, and their titles say which. "breeds" is drawn
# only for a dataset with breeds.
FIGURES = {
    "curves": "learning_curves.png",
    "overlays": "overlays.png",
    "worst": "worst.png",
    "distribution": "score_distribution.png",
    "breeds": "per_breed.png",
    "scores": "test_scores.png",
    "confusion": "confusion.png",
    "per_class": "per_class_iou.png",
    "recall": "per_class_recall.png",
}


@dataclass(frozen=True)
class ModelFiles:
    """One model's inputs to the plot stage: its dvclive folder, its evaluation folder's scores .json,
    per-image and per-breed .csv (the latter only for a dataset with breeds), and its predictions .npz."""

    live: Path
    metrics: Path
    per_image: Path
    per_breed: Path
    predictions: Path


def model_files(model: str, live: Path, evaluation: Path, predictions: Path) -> ModelFiles:
    """Where ``model``'s inputs lie in the ``live``, ``evaluation`` and ``predictions`` folders."""
    folder = Path(evaluation) / model
    return ModelFiles(
        live=Path(live) / model,
        metrics=folder / "scores.json",
        per_image=folder / "per_image.csv",
        per_breed=folder / "per_breed.csv",
        predictions=Path(predictions) / f"{model}.npz",
    )
