"""How often each class occurs in a split's masks, and the class weights that balance them.

Preprocess counts every split's pixels by class once, as it writes the cache (meta.json), and reports the
train split's counts and weights in ``metrics/data.json``; training weighs its cross-entropy with them
(``class_weights`` in params.yaml).
"""

from dataclasses import dataclass, field

import numpy as np

from pipeline.core.errors import UserError


@dataclass
class PixelCounts:
    """Pixels by class over a set of masks, fed a mask at a time (:meth:`add`).

    ``pixels`` int64 (C,): the pixels of each class; ``present`` int64 (C,): the counted pixels of the
    masks in which the class occurs at all (the denominator of Eigen & Fergus's class frequency).
    Pixels labelled other than 0..C-1 (the ignore label 255, the padding of a kept-aspect image) count
    in neither.
    """

    num_classes: int
    pixels: np.ndarray = field(init=False)
    present: np.ndarray = field(init=False)

    def __post_init__(self):
        self.pixels = np.zeros(self.num_classes, np.int64)
        self.present = np.zeros(self.num_classes, np.int64)

    def add(self, mask: np.ndarray) -> None:
        """Count one mask, uint8 (H, W) of class indices and ignored values (>= C)."""
        counts = np.bincount(mask.ravel(), minlength=256)[: self.num_classes]
        self.pixels += counts
        self.present += np.where(counts > 0, counts.sum(), 0)

    def to_json(self) -> dict[str, list[int]]:
        """``{"pixels": [C ints], "present": [C ints]}``."""
        return {"pixels": self.pixels.tolist(), "present": self.present.tolist()}

    @classmethod
    def from_json(cls, record: dict[str, list[int]]) -> "PixelCounts":
        """Inverse of :meth:`to_json`. Raises KeyError or ValueError on a malformed record."""
        counts = cls(len(record["pixels"]))
        counts.pixels[:] = record["pixels"]
        counts.present[:] = record["present"]
        return counts


def median_frequency(counts: PixelCounts) -> np.ndarray:
    """Median frequency balancing: float64 (C,) weights w_c = median(f) / f_c.

    f_c = pixels of class c / pixels of the images in which c is present (Eigen & Fergus 2015, "Predicting
    depth, surface normals and semantic labels with a common multi-scale convolutional architecture",
    section 4.3; used by SegNet, Badrinarayanan et al. 2017). The median runs over the classes that occur;
    a class absent from every mask gets weight 0 (nothing to learn it from). Raises UserError if no class
    occurs.
    """
    seen = counts.pixels > 0
    if not seen.any():
        raise UserError("the train split has no labelled pixel (every mask ignored); check its masks")
    frequency = np.zeros(counts.num_classes)
    frequency[seen] = counts.pixels[seen] / counts.present[seen]
    weights = np.zeros(counts.num_classes)
    weights[seen] = np.median(frequency[seen]) / frequency[seen]
    return weights


def class_weights(spec: str | list[float], counts: PixelCounts) -> np.ndarray | None:
    """The ``class_weights`` param for the train split's ``counts``: None for "none", :func:`median_frequency`
    for "median_frequency", else the list itself as float64 (C,). Raises UserError if the list does not hold
    one weight per class."""
    if spec == "none":
        return None
    if spec == "median_frequency":
        return median_frequency(counts)
    if len(spec) != counts.num_classes:
        raise UserError(
            f"params.yaml: class_weights lists {len(spec)} weights but the task has {counts.num_classes} classes; "
            "give one per class, or none, or median_frequency"
        )
    return np.asarray(spec, np.float64)


def class_report(names: tuple[str, ...], counts: PixelCounts) -> dict[str, dict[str, float]]:
    """The train split's classes as ``metrics/data.json`` reports them: by name, ``pixels`` (int), ``fraction``
    of the labelled pixels, and the ``median_frequency`` weight (:func:`median_frequency`). Raises UserError
    as it does."""
    weights, total = median_frequency(counts), counts.pixels.sum()
    return {
        name: {"pixels": int(n), "fraction": float(n / total), "median_frequency": float(w)}
        for name, n, w in zip(names, counts.pixels, weights, strict=True)
    }
