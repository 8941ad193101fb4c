"""`petseg predict`'s outputs: where each photo's mask and overlay go, the check that a run overwrites
none of its inputs or its own outputs, and the two PNGs written atomically."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.core.errors import UserError
from pipeline.core.io import atomic_path
from pipeline.data.classes import BINARY_PETS, Classes
from pipeline.report.overlays import palette_overlay

MASK_SUFFIX, OVERLAY_SUFFIX = "_mask.png", "_overlay.png"


def output_paths(out: Path, image: Path) -> tuple[Path, Path]:
    """The mask and overlay paths written for ``image`` in folder ``out``."""
    return out / f"{image.stem}{MASK_SUFFIX}", out / f"{image.stem}{OVERLAY_SUFFIX}"


def check_outputs(files: Sequence[Path], out: Path) -> None:
    """Refuse a run that would overwrite its own outputs or inputs.

    Raises UserError (naming the first clash) if two ``files`` share a stem (compared case-insensitively,
    as a case-insensitive file system would), or if an output path in ``out`` is one of the ``files``.
    """
    by_stem: dict[str, Path] = {}
    for file in files:
        other = by_stem.setdefault(file.stem.casefold(), file)
        if other is not file:
            raise UserError(
                f"{other} and {file}: both would be written as {output_paths(out, file)[0].name}; "
                "rename one or predict them in separate runs with different --out folders"
            )
    inputs = {file.resolve() for file in files}
    for file in files:
        for target in output_paths(out, file):
            if target.resolve() in inputs:
                raise UserError(f"{target}: is an input and would be overwritten by a prediction; choose another --out")


def write_outputs(
    out: Path, source: Path, image: Image.Image, mask: np.ndarray, classes: Classes = BINARY_PETS
) -> tuple[Path, Path]:
    """Write ``<stem>_mask.png`` and ``<stem>_overlay.png`` (RGB ``image``, W x H, the mask drawn on it) into
    ``out``, each atomically; return their paths. ``mask`` is a label map uint8 (H, W); the overlay tints each
    class in its ``classes.palette`` colour but one named background (:func:`~pipeline.report.overlays.backdrop`).
    Binary ``classes``: a mode L mask of 0 and 255 (the pet). Otherwise a mode P mask of the class indices
    0..C-1 with the palette (a viewer shows the class colours, a reader gets the indices).
    Raises UserError if a file cannot be written."""
    mask_path, overlay_path = output_paths(out, source)
    overlay = palette_overlay(np.asarray(image), mask, classes)
    mask_png = Image.fromarray(mask * 255 if classes.binary else mask, "L")
    if not classes.binary:
        mask_png.putpalette([value for colour in classes.palette for value in colour])  # L → P, indices kept
    try:
        for path, picture in ((mask_path, mask_png), (overlay_path, Image.fromarray(overlay))):
            with atomic_path(path) as tmp:
                picture.save(tmp, format="PNG")  # tmp's name ends in .tmp-<pid>: PIL cannot infer PNG from it
    except OSError as err:
        raise UserError(f"{out}: cannot write predictions ({err}); check the folder and free space") from None
    return mask_path, overlay_path
