"""Masks drawn on photos: a tint, a label map in its classes' palette, and a prediction with its wrong
pixels marked, for any number of classes (a binary task's classes are background and pet).

Every class is drawn in its palette colour but one named "background" (the pets' class 0, or a folder
dataset's class so named in its classes.yaml), which shows the photo: a class is never taken for the
background from its index alone, since a user's class 0 may be the sky or the road.
"""

from collections.abc import Sequence

import numpy as np
from matplotlib.patches import Patch

from pipeline.data.classes import Classes
from pipeline.data.masks import IGNORE

# Paul Tol's "bad data" pale grey (https://personal.sron.nl/~pault/): the colour of ignored pixels in a
# palette mask. Apart from the default palette's black and its mid grey (128) for classes past the 7th.
IGNORE_COLOUR = (221, 221, 221)
# Okabe & Ito's reddish purple (https://jfly.uni-koeln.de/color/), the one of their eight colours the
# default class palette (pipeline.data.classes.OKABE_ITO) leaves out: a wrongly predicted pixel.
WRONG = np.array([204, 121, 167], np.float32)
BACKGROUND = "background"  # the class name, in any case, drawn as the photo rather than a colour


def backdrop(names: Sequence[str]) -> tuple[int, ...]:
    """The indices of the classes among ``names`` drawn as the photo: those named :data:`BACKGROUND`
    (compared case-insensitively); none for a dataset without such a class."""
    return tuple(c for c, name in enumerate(names) if name.casefold() == BACKGROUND)


def tint(image: np.ndarray, mask: np.ndarray, colour: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend ``colour`` into uint8 (H, W, 3) ``image`` where (H, W) ``mask`` is nonzero; uint8 (H, W, 3)."""
    out = image.astype(np.float32)
    where = mask.astype(bool)
    out[where] = (1 - alpha) * out[where] + alpha * colour
    return out.round().astype(np.uint8)


def palette_mask(mask: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """Class indices (H, W) (uint8) as uint8 (H, W, 3) RGB: index c gets ``palette[c]``, ignored pixels
    (:data:`~pipeline.data.masks.IGNORE`) :data:`IGNORE_COLOUR`. Raises ValueError on any other index
    outside 0..len(``palette``) - 1."""
    bad = (mask < 0) | ((mask >= len(palette)) & (mask != IGNORE))
    if bad.any():
        values = np.unique(mask[bad])
        raise ValueError(
            f"mask holds class indices {values[:5].tolist()} outside 0..{len(palette) - 1} (and not {IGNORE})"
        )
    # A lookup table over every uint8 value: one indexing pass, whatever the number of classes.
    lut = np.empty((256, 3), np.uint8)
    lut[: len(palette)] = np.asarray(palette, np.uint8).reshape(-1, 3)
    lut[IGNORE] = IGNORE_COLOUR
    return lut[mask]


def palette_overlay(image: np.ndarray, mask: np.ndarray, classes: Classes, alpha: float = 0.5) -> np.ndarray:
    """Blend each class's ``classes.palette`` colour into uint8 (H, W, 3) ``image`` with weight ``alpha``
    where (H, W) ``mask`` holds that class; uint8 (H, W, 3).

    A class named "background" (:func:`backdrop`) keeps the photo: it covers most of a picture, and its tint
    (black in the default palette) would darken the very photo the other classes are judged against. Ignored
    pixels keep the photo too. Raises ValueError on mismatched sizes or an index :func:`palette_mask` rejects.
    """
    if image.shape[:2] != mask.shape:
        raise ValueError(f"image {image.shape[:2]} and mask {mask.shape} differ in size")
    colours = palette_mask(mask, classes.palette).astype(np.float32)
    out = image.astype(np.float32)
    where = ~np.isin(mask, (*backdrop(classes.names), IGNORE))
    # The same blend and rounding as pipeline.report.overlays.tint.
    out[where] = (1 - alpha) * out[where] + alpha * colours[where]
    return out.round().astype(np.uint8)


def outcome_overlay(
    image: np.ndarray, pred: np.ndarray, truth: np.ndarray, classes: Classes, alpha: float = 0.55
) -> np.ndarray:
    """A prediction on its photo: uint8 (H, W, 3) ``image`` with (H, W) label map ``pred`` drawn in the
    ``classes``' palette (:func:`palette_overlay`) where it agrees with ``truth`` (class indices, 255 ignored)
    and :data:`WRONG` where it does not; ignored pixels show the prediction. Returns uint8 (H, W, 3). Raises
    ValueError on mismatched shapes or an index :func:`palette_mask` rejects."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction {pred.shape} and truth {truth.shape} differ in size")
    wrong = (pred != truth) & (truth != IGNORE)
    return tint(palette_overlay(image, pred, classes), wrong, WRONG, alpha)


def class_legend(classes: Classes, wrong: bool = False) -> list[Patch]:
    """Legend entries of :func:`palette_overlay`'s pictures: first an empty box for what is drawn as the
    photo (the classes named "background", if any, and ignored pixels), then one patch per other class in
    its colour; with ``wrong``, a last entry for :func:`outcome_overlay`'s wrong pixels."""
    photo = backdrop(classes.names)
    shown = " / ".join([*(classes.names[c] for c in photo), "ignored"])
    handles = [Patch(facecolor="none", edgecolor="grey", label=f"{shown}: photo")]
    handles += [
        Patch(color=np.asarray(colour) / 255, label=name)
        for c, (colour, name) in enumerate(zip(classes.palette, classes.names, strict=True))
        if c not in photo
    ]
    return handles + ([Patch(color=WRONG / 255, label="wrong (over the predicted class)")] if wrong else [])
