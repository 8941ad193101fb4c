"""Where the pairs of a dataset are and how one is decoded: the pets (a task on their trimaps) or a folder of
the user's images and label masks. The split and preprocess stages open either through :func:`open_source`.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pipeline.core.errors import UserError
from pipeline.data import folder, layout
from pipeline.data.classes import CLASSES_FILE, Classes, is_folder_dataset, pet_classes, read_classes_yaml
from pipeline.data.decode import BadPair, decode_pair, open_image, same_size
from pipeline.data.masks import IGNORE
from pipeline.data.report import BAD_MASK_VALUES, UNDECODABLE_IMAGE, UNDECODABLE_MASK

UNKNOWN = layout.UNKNOWN_SPECIES  # breed and species of a folder dataset's images


def any_known(labels: Sequence[str]) -> bool:
    """Whether any of a split's breeds or species (``labels``, one per image) is known: the pets' are, while a
    folder dataset's are all :data:`UNKNOWN`, so its reports have no breakdown by either."""
    return any(label != UNKNOWN for label in labels)


@dataclass(frozen=True)
class Source:
    """An opened dataset: its ``root`` (extracted), ``classes``, whether it is a user's ``folder`` (else the
    pets), the pets' trimap ``task`` and ``boundary`` policy, and the pets' ``species`` per stem."""

    root: Path
    classes: Classes
    folder: bool
    task: str = "binary"
    boundary: str = "pet"
    species: dict[str, str] = field(default_factory=dict)

    @property
    def ignores(self) -> bool:
        """Whether a binary task's masks may hold :data:`IGNORE` pixels (stored apart at native size)."""
        return self.folder or self.boundary == "ignore"

    def breed_species(self, stem: str) -> tuple[str, str]:
        """The breed (from the pets' stem) and species (annotations/list.txt) of ``stem``; "unknown" for a folder."""
        if self.folder:
            return UNKNOWN, UNKNOWN
        return layout.breed_of(stem), self.species.get(stem, UNKNOWN)

    def photo_size(self, stem: str) -> tuple[int, int] | None:
        """The (height, width) in pixels of ``stem``'s photo, from its header alone; None if it cannot be read
        (preprocess then skips the pair when it decodes it)."""
        path = folder.image_path(self.root, stem) if self.folder else layout.image_path(self.root, stem)
        try:
            with Image.open(path) as img:
                return img.height, img.width
        except (OSError, UnidentifiedImageError):
            return None

    def decode(self, stem: str) -> tuple[Image.Image, np.ndarray]:
        """The photo (RGB) and its mask uint8 (H, W) at the photo's own size: a binary task's in {0, 1, 255},
        a multi-class task's class indices and 255 for ignored pixels. Raises :class:`BadPair` with the
        reason for a missing or undecodable file, a mask of another size, or values outside the classes."""
        if self.folder:
            return _decode_folder(self.root, stem, self.classes)
        return decode_pair(self.root, stem, self.boundary, self.task)


def _decode_folder(root: Path, stem: str, classes: Classes) -> tuple[Image.Image, np.ndarray]:
    image = open_image(folder.image_path(root, stem), "RGB", UNDECODABLE_IMAGE)
    path = folder.mask_path(root, stem)
    raw = same_size(open_image(path, "L", UNDECODABLE_MASK), image, path, "mask")
    ignored = raw == classes.ignore_index
    bad = np.setdiff1d(np.unique(raw[~ignored]), np.arange(classes.count))
    if bad.size:
        raise BadPair(
            BAD_MASK_VALUES,
            f"{path}: mask has values {bad.tolist()[:5]} outside the {classes.count} classes of {CLASSES_FILE} "
            f"(0..{classes.count - 1}, ignore_index {classes.ignore_index}); fix the mask or delete the pair",
        )
    mask = raw.astype(np.uint8, copy=True)
    mask[ignored] = IGNORE
    return image, mask


def open_source(root: Path, task: str, boundary: str) -> Source:
    """The dataset at ``root`` (extracted): a folder dataset if it holds classes.yaml, else the pets in the
    official layout. ``task`` "auto" takes a folder's classes from its classes.yaml and makes the pets binary;
    "binary" is the pets' pet vs background or a folder of two classes; "trimap" the pets' three trimap
    classes. ``boundary``: the pets' binary task only. Raises UserError for a folder dataset asked for
    ``task: trimap``, or ``task: binary`` with other than two classes, a bad classes.yaml, or a folder in
    neither layout."""
    root = Path(root)
    if is_folder_dataset(root):
        folder.check_folder(root)
        classes = read_classes_yaml(root / CLASSES_FILE)
        if task == "trimap" or (task == "binary" and not classes.binary):
            raise UserError(
                f"task: {task} does not fit {root}, a folder dataset of {classes.count} classes (its {CLASSES_FILE}): "
                "set task: auto"
            )
        return Source(root, classes, folder=True)
    layout.check_layout(root)
    species = layout.read_species(root / "annotations" / "list.txt")
    pets = "binary" if task == "auto" else task
    return Source(root, pet_classes(pets), folder=False, task=pets, boundary=boundary, species=species)
