"""What a segmentation task's classes are: their names (index = position), the ignore label, a palette.

Three kinds of task, one record (:class:`Classes`):

- the pets, ``task: binary`` (the default): background and pet, from the trimap with its boundary band
  counted as preprocess.boundary says;
- the pets, ``task: trimap``: the trimap's three classes, re-indexed 0 background, 1 pet, 2 boundary
  (the trimap files hold 1 pet, 2 background, 3 boundary: dataset README);
- a folder of the user's images and masks, whose ``classes.yaml`` names the classes::

      classes: [background, road, car]     # index = position in the list
      ignore_index: 255                    # optional: a mask value in no loss and no metric
      palette: [[0, 0, 0], [128, 64, 128], [0, 0, 142]]   # optional: RGB per class, for pictures

Two classes make a binary task (one sigmoid logit, Dice of class 1); more, a multi-class task (C
softmax logits, per-class IoU and mIoU). In the cache every mask holds class indices and
:data:`~pipeline.data.masks.IGNORE` (255) for ignored pixels, whatever the source's ignore label;
preprocess writes the record into each split's meta.json, training copies it into the checkpoint, and
export into the ONNX metadata, so every later stage and ``petseg predict`` know the classes.
"""

import colorsys
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import yaml

from pipeline.core.errors import UserError, first_line
from pipeline.data.masks import IGNORE

CLASSES_FILE = "classes.yaml"  # the file that marks a folder of the user's images and masks
PET_CLASSES = {"binary": ("background", "pet"), "trimap": ("background", "pet", "boundary")}
# Okabe & Ito's colour-blind-safe palette (https://jfly.uni-koeln.de/color/) for the first seven classes.
OKABE_ITO = ((0, 0, 0), (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178), (213, 94, 0))
# Classes past the seventh: hues a golden angle apart (each as far from the ones before as the count allows),
# alternately bright and deep, so that no two of even 255 classes share a colour.
GOLDEN = (math.sqrt(5) - 1) / 2


def default_palette(count: int) -> tuple[tuple[int, int, int], ...]:
    """``count`` RGB triples (0..255): :data:`OKABE_ITO`, then golden-angle hues (distinct, none grey)."""
    extra = (
        colorsys.hsv_to_rgb((0.1 + k * GOLDEN) % 1.0, 0.75, 0.95 if k % 2 else 0.7)
        for k in range(max(0, count - len(OKABE_ITO)))
    )
    return (OKABE_ITO + tuple(tuple(round(255 * c) for c in rgb) for rgb in extra))[:count]


@dataclass(frozen=True)
class Classes:
    """The classes of a task: ``names`` (index = position), ``ignore_index`` (the mask value the source
    uses for pixels in no loss and no metric; the cache stores them as 255) and ``palette``, one RGB
    triple per class (:func:`default_palette` when not given)."""

    names: tuple[str, ...]
    ignore_index: int = IGNORE
    palette: tuple[tuple[int, int, int], ...] = ()

    def __post_init__(self):
        if not self.palette:
            object.__setattr__(self, "palette", default_palette(self.count))

    @property
    def count(self) -> int:
        """The number of classes C."""
        return len(self.names)

    @property
    def binary(self) -> bool:
        """Two classes: one sigmoid logit for class 1, scored by its Dice."""
        return self.count == 2

    @property
    def logits(self) -> int:
        """Logit channels a model needs: 1 for a binary task, C otherwise."""
        return 1 if self.binary else self.count


def pet_classes(task: str) -> Classes:
    """The classes of the pets' ``task`` ("binary" or "trimap")."""
    return Classes(PET_CLASSES[task])


BINARY_PETS = pet_classes("binary")


def is_folder_dataset(root: Path) -> bool:
    """Whether ``root`` is a folder of the user's images and masks (it holds classes.yaml)."""
    return (Path(root) / CLASSES_FILE).is_file()


def read_classes_yaml(path: Path) -> Classes:
    """The :class:`Classes` of a user's classes.yaml. Raises UserError (naming the file and the fix) if it
    is missing, not YAML, or holds no list of at least two distinct names, an ignore_index outside
    0..255 that is also a class index, or a palette that is not one RGB triple (0..255) per class."""
    path = Path(path)
    fix = f"see docs/data.md for the {CLASSES_FILE} format"
    try:
        spec = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found; a folder dataset needs it ({fix})") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({first_line(err)}); {fix}") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("classes"), list):
        raise UserError(f"{path}: needs `classes: [name, ...]`; {fix}")
    names = spec["classes"]
    if len(names) < 2 or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
        raise UserError(f"{path}: classes must be at least two distinct names, got {names!r}; {fix}")
    unknown = sorted(set(spec) - {"classes", "ignore_index", "palette"})
    if unknown:
        raise UserError(f"{path}: unknown key {', '.join(unknown)}; {fix}")
    ignore = spec.get("ignore_index", IGNORE)
    if isinstance(ignore, bool) or not isinstance(ignore, int) or not len(names) <= ignore <= 255:
        raise UserError(f"{path}: ignore_index must be a whole number from {len(names)} to 255, got {ignore!r}; {fix}")
    if len(names) > IGNORE:
        raise UserError(f"{path}: at most {IGNORE} classes fit a uint8 mask, got {len(names)}; {fix}")
    palette = spec.get("palette", [])
    rgb = all(
        isinstance(c, list) and len(c) == 3 and all(isinstance(v, int) and 0 <= v <= 255 for v in c) for c in palette
    )
    if palette and (len(palette) != len(names) or not rgb):
        raise UserError(f"{path}: palette must be one [r, g, b] (0..255) per class ({len(names)}); {fix}")
    return Classes(tuple(names), ignore, tuple(tuple(c) for c in palette))


def classes_to_json(classes: Classes) -> dict:
    """``classes`` as plain JSON data (the cache's meta.json, checkpoints, ONNX metadata)."""
    return asdict(classes)


def classes_from_json(record: dict) -> Classes:
    """Inverse of :func:`classes_to_json`. Raises KeyError or TypeError on a malformed record."""
    return Classes(tuple(record["names"]), record["ignore_index"], tuple(tuple(c) for c in record["palette"]))
