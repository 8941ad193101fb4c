"""Test-set scoring at the photos' own resolution, threshold choice on valid, breakdowns by breed.

Every Dice/IoU here comes from confusion counts (TP, FP, FN, TN in pixels): dataset-level scores sum
the counts over images first (:mod:`pipeline.evaluate.metrics`). An image where the ground truth and the
prediction are both empty scores Dice 1 and IoU 1; one where exactly one is empty scores 0. Pixels
a cache marks ignored (``native_ignore``, preprocess.boundary: ignore) are in no count.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline.data.masks import PackedMasks, pack_mask, target_mask
from pipeline.evaluate.inference import native_probabilities
from pipeline.evaluate.metrics import confusion_counts, dice_from_counts, iou_from_counts

# evaluate.threshold: auto searches 0.05, 0.10, ..., 0.95.
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))


def counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Confusion counts int64 (4,) TP, FP, FN, TN of one binary prediction against one mask (same shape)
    in {0, 1, 255}; 255 (:data:`~pipeline.data.masks.IGNORE`) pixels count nowhere."""
    return confusion_counts(torch.from_numpy(pred[None]), torch.from_numpy(truth[None]))[0].numpy()


@dataclass(frozen=True)
class Scored:
    """Per-image results: ``native`` and ``at_size`` counts int64 (N, 4) (TP, FP, FN, TN), and the
    predicted masks at native resolution."""

    native: np.ndarray
    at_size: np.ndarray
    predictions: PackedMasks


class Scorer:
    """Scores logits batch by batch, so memory holds one batch of logits, not the split's.

    ``masks`` uint8 (N, S, S) in {0, 1, 255} are the at-size ground truth (a memory map is fine: it is
    read one batch at a time); ``native`` the N masks at each photo's own size; ``native_ignore``
    (optional, the shapes of ``native``) marks native pixels to leave out; 255 and marked pixels count
    nowhere. At native size each image's logits are resized bilinearly to its mask's size, then a pixel
    is pet when sigmoid > ``threshold``. Raises ValueError if the counts of masks and native masks
    differ, or ``native_ignore`` has other shapes than ``native``.
    """

    def __init__(
        self, masks: np.ndarray, native: PackedMasks, threshold: float, native_ignore: PackedMasks | None = None
    ):
        if len(masks) != len(native):
            raise ValueError(f"{len(masks)} masks, {len(native)} native masks")
        _check_ignore(native, native_ignore)
        self.masks, self.native, self.ignore, self.threshold = masks, native, native_ignore, threshold
        # Counts, too, go into arrays made up front: small arrays kept an image at a time between the
        # large ones freed an image at a time fragment glibc's heap, which then grows with the split.
        self.at_size = np.zeros((len(masks), 4), np.int64)
        self.native_counts = np.zeros((len(masks), 4), np.int64)
        self.seen = 0
        # Each prediction has its native mask's shape, so it packs into the same bytes: one buffer up
        # front, instead of a small array an image (which glibc's heap kept after the run's big frees).
        self.bits = np.empty(len(native.bits), np.uint8)

    def add(self, logits: np.ndarray) -> None:
        """Score the next images' logits float32 (B, S, S), in the order of ``masks``. Raises
        ValueError if more logits come than there are masks."""
        start, stop = self.seen, self.seen + len(logits)
        if stop > len(self.masks):
            raise ValueError(f"{stop} logits, {len(self.masks)} masks")
        truth = torch.from_numpy(np.array(self.masks[start:stop]))
        probabilities = torch.sigmoid(torch.from_numpy(logits))
        self.at_size[start:stop] = confusion_counts(probabilities > self.threshold, truth).numpy()
        for i, image_logits in enumerate(logits, start):
            truth = target_mask(self.native, self.ignore, i)
            pred = native_probabilities(image_logits, *truth.shape) > self.threshold
            self.bits[self.native.offsets[i] : self.native.offsets[i + 1]] = pack_mask(pred)
            self.native_counts[i] = counts(pred, truth)
        self.seen = stop

    def result(self) -> Scored:
        """The :class:`Scored` of every image. Raises ValueError if fewer logits came than masks."""
        if self.seen != len(self.masks):
            raise ValueError(f"{self.seen} logits, {len(self.masks)} masks")
        return Scored(
            self.native_counts,
            self.at_size,
            PackedMasks(self.bits, np.array(self.native.offsets), np.array(self.native.shapes)),
        )


def score(
    logits: np.ndarray,
    masks: np.ndarray,
    native: PackedMasks,
    threshold: float,
    native_ignore: PackedMasks | None = None,
) -> Scored:
    """Score logits float32 (N, S, S) held in memory at once (a :class:`Scorer` given one batch).

    Arguments and errors as in :class:`Scorer`; also raises ValueError if the counts of logits and
    masks differ.
    """
    scorer = Scorer(masks, native, threshold, native_ignore)
    scorer.add(logits)
    return scorer.result()


def _check_ignore(native: PackedMasks, native_ignore: PackedMasks | None) -> None:
    if native_ignore is not None and not np.array_equal(native_ignore.shapes, native.shapes):
        raise ValueError("native_ignore masks differ in number or size from the native masks")


class ThresholdSearch:
    """The threshold in ``grid`` with the highest dataset-level Dice at native resolution, fed batch
    by batch (memory: one batch of logits).

    Meant for the valid split (never test). ``native`` and ``native_ignore`` as in :class:`Scorer`.
    Ties go to the threshold nearest 0.5, then the lower one.
    """

    def __init__(
        self, native: PackedMasks, grid: tuple[float, ...] = THRESHOLD_GRID, native_ignore: PackedMasks | None = None
    ):
        _check_ignore(native, native_ignore)
        self.native, self.ignore, self.grid = native, native_ignore, grid
        self.thresholds = np.array(grid, np.float32)[:, None, None]
        self.total = np.zeros((len(grid), 3), np.int64)
        self.seen = 0

    def add(self, logits: np.ndarray) -> None:
        """Count the next images' logits float32 (B, S, S), in the order of ``native``. Raises
        ValueError if more logits come than there are masks."""
        if self.seen + len(logits) > len(self.native):
            raise ValueError(f"{self.seen + len(logits)} logits, {len(self.native)} native masks")
        for i, image_logits in enumerate(logits, self.seen):
            mask = target_mask(self.native, self.ignore, i)
            truth, background = mask == 1, mask == 0
            pred = native_probabilities(image_logits, *mask.shape)[None] > self.thresholds
            self.total += np.stack(
                [(pred & truth).sum((1, 2)), (pred & background).sum((1, 2)), (~pred & truth).sum((1, 2))], axis=1
            )
        self.seen += len(logits)

    def best(self) -> float:
        """The chosen threshold. Raises ValueError if fewer logits came than masks."""
        if self.seen != len(self.native):
            raise ValueError(f"{self.seen} logits, {len(self.native)} native masks")
        dice = dice_from_counts(*torch.from_numpy(self.total).T).numpy()
        grid = self.grid
        best = max(range(len(grid)), key=lambda k: (round(float(dice[k]), 12), -abs(grid[k] - 0.5), -grid[k]))
        return float(grid[best])


def choose_threshold(
    logits: np.ndarray,
    native: PackedMasks,
    grid: tuple[float, ...] = THRESHOLD_GRID,
    native_ignore: PackedMasks | None = None,
) -> float:
    """:class:`ThresholdSearch` over logits float32 (N, S, S) held in memory at once."""
    search = ThresholdSearch(native, grid, native_ignore)
    search.add(logits)
    return search.best()


def _scores(c: np.ndarray) -> dict[str, float]:
    """Dataset-level and per-image scores of counts int64 (N, 4)."""
    t = torch.from_numpy(c)
    tp, fp, fn, tn = t.sum(0)
    per_image = dice_from_counts(*t[:, :3].T)
    return {
        "dice": float(dice_from_counts(tp, fp, fn)),
        "iou": float(iou_from_counts(tp, fp, fn)),
        "dice_per_image": float(per_image.mean()),
        "dice_per_image_median": float(np.median(per_image.numpy())),
        "pixel_accuracy": float((tp + tn).double() / t.sum().double()),
    }


def per_image_table(
    scored: Scored, stems: list[str], breeds: list[str], species: list[str], native: PackedMasks
) -> pd.DataFrame:
    """One row per image: stem, breed, species, width, height (pixels), pet_fraction (of the ground
    truth's scored pixels, i.e. the ignored ones left out), dice, iou, and the counts tp, fp, fn
    (pixels) they come from, all at native resolution; the counts let a comparison recompute the
    dataset-level Dice of any subset of images (``petseg diff``'s bootstrap)."""
    c = torch.from_numpy(scored.native)
    tp, fp, fn = c[:, 0], c[:, 1], c[:, 2]
    pixels = scored.native.sum(1)
    return pd.DataFrame(
        {
            "stem": stems,
            "breed": breeds,
            "species": species,
            "width": native.shapes[:, 1],
            "height": native.shapes[:, 0],
            "pet_fraction": (scored.native[:, 0] + scored.native[:, 2]) / pixels,
            "dice": dice_from_counts(tp, fp, fn).numpy(),
            "iou": iou_from_counts(tp, fp, fn).numpy(),
            "tp": tp.numpy(),
            "fp": fp.numpy(),
            "fn": fn.numpy(),
        }
    )


def per_breed_table(scored: Scored, per_image: pd.DataFrame) -> pd.DataFrame:
    """One row per breed: breed, species, images, dice (dataset-level within the breed), dice_per_image;
    sorted by dice, worst first."""
    rows = []
    for (breed, species), group in per_image.groupby(["breed", "species"], sort=True):
        s = _scores(scored.native[group.index.to_numpy()])
        rows.append((breed, species, len(group), s["dice"], s["dice_per_image"]))
    table = pd.DataFrame(rows, columns=["breed", "species", "images", "dice", "dice_per_image"])
    return table.sort_values(["dice", "breed"], kind="stable").reset_index(drop=True)


def headline(scored: Scored) -> dict[str, float]:
    """The test scores a reviewer compares (:data:`~pipeline.core.constants.HEADLINE_METRICS`, with the
    training's best valid Dice and epoch): ``dice``, ``iou`` and ``dice_per_image`` at each photo's own
    size, and ``dice_at_image_size`` (the Dice at the cache's square size, against the resized masks)."""
    native = _scores(scored.native)
    return {
        "dice": native["dice"],
        "iou": native["iou"],
        "dice_per_image": native["dice_per_image"],
        "dice_at_image_size": _scores(scored.at_size)["dice"],
    }


def details(scored: Scored, species: list[str]) -> dict:
    """What else the counts say, after the headline in ``metrics/<model>.json``:
    ``dice_per_image_median`` and ``pixel_accuracy`` (native), ``at_image_size`` {iou,
    dice_per_image}, ``species`` {name: {dice, dice_per_image, images}} and ``images``."""
    at_size = _scores(scored.at_size)
    native = _scores(scored.native)
    by_species = {}
    names = np.array(species)
    for name in sorted(set(species)):
        s = _scores(scored.native[names == name])
        by_species[name] = {
            "dice": s["dice"],
            "dice_per_image": s["dice_per_image"],
            "images": int((names == name).sum()),
        }
    return {
        "dice_per_image_median": native["dice_per_image_median"],
        "pixel_accuracy": native["pixel_accuracy"],
        "at_image_size": {k: at_size[k] for k in ("iou", "dice_per_image")},
        "species": by_species,
        "images": len(scored.native),
    }
