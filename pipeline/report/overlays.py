"""Masks drawn on photos: a tint for a predicted mask, and true/false positive/negative colouring."""

import numpy as np

# Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/), RGB.
PET = np.array([230, 159, 0], np.float32)  # orange: a predicted or true mask on its own
TP = np.array([0, 158, 115], np.float32)  # bluish green: pet, predicted pet
FP = np.array([213, 94, 0], np.float32)  # vermillion: background predicted pet
FN = np.array([0, 114, 178], np.float32)  # blue: pet predicted background
ERROR_COLOURS = {"true positive": TP, "false positive": FP, "false negative": FN}


def tint(image: np.ndarray, mask: np.ndarray, colour: np.ndarray = PET, alpha: float = 0.5) -> np.ndarray:
    """Blend ``colour`` into uint8 (H, W, 3) ``image`` where (H, W) ``mask`` is nonzero; uint8 (H, W, 3)."""
    out = image.astype(np.float32)
    where = mask.astype(bool)
    out[where] = (1 - alpha) * out[where] + alpha * colour
    return out.round().astype(np.uint8)


def error_overlay(image: np.ndarray, pred: np.ndarray, truth: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """Colour uint8 (H, W, 3) ``image`` by outcome of (H, W) binary ``pred`` against ``truth`` in
    {0, 1, 255}: true positives :data:`TP`, false positives :data:`FP`, false negatives :data:`FN`;
    true negatives and ignored pixels (truth 255, :data:`~pipeline.data.masks.IGNORE`) keep the photo.
    Returns uint8 (H, W, 3). Raises ValueError on mismatched shapes."""
    if pred.shape != truth.shape or image.shape[:2] != pred.shape:
        raise ValueError(f"image {image.shape[:2]}, prediction {pred.shape} and truth {truth.shape} differ in size")
    pred, pet, background = pred.astype(bool), truth == 1, truth == 0
    out = image
    for colour, where in ((TP, pred & pet), (FP, pred & background), (FN, ~pred & pet)):
        out = tint(out, where, colour, alpha)
    return out
