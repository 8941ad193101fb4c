"""Test-set scoring at the photos' own resolution, threshold choice on valid, breakdowns by breed.

Every Dice/IoU here comes from confusion counts (TP, FP, FN, TN in pixels): dataset-level scores sum
the counts over images first (:mod:`pipeline.metrics`). An image where the ground truth and the
prediction are both empty scores Dice 1 and IoU 1; one where exactly one is empty scores 0. Pixels
a cache marks ignored (``native_ignore``, preprocess.boundary: ignore) are in no count.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from pipeline.inference import native_probabilities
from pipeline.masks import PackedMasks, target_mask
from pipeline.metrics import confusion_counts, dice_from_counts, iou_from_counts

# evaluate.threshold: auto searches 0.05, 0.10, ..., 0.95.
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))


def counts(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Confusion counts int64 (4,) TP, FP, FN, TN of one binary prediction against one mask (same shape)
    in {0, 1, 255}; 255 (:data:`~pipeline.masks.IGNORE`) pixels count nowhere."""
    return confusion_counts(torch.from_numpy(pred[None]), torch.from_numpy(truth[None]))[0].numpy()


@dataclass(frozen=True)
class Scored:
    """Per-image results: ``native`` and ``at_size`` counts int64 (N, 4) (TP, FP, FN, TN), and the
    predicted masks at native resolution."""

    native: np.ndarray
    at_size: np.ndarray
    predictions: PackedMasks


def score(
    logits: np.ndarray,
    masks: np.ndarray,
    native: PackedMasks,
    threshold: float,
    native_ignore: PackedMasks | None = None,
) -> Scored:
    """Score logits float32 (N, S, S) at ``image_size`` and at each photo's own size.

    At native size, each image's logits are resized bilinearly to the size of its ``native`` mask,
    then a pixel is pet when sigmoid > ``threshold``. ``masks`` uint8 (N, S, S) in {0, 1, 255} are
    the at-size ground truth; ``native_ignore`` (optional, the shapes of ``native``) marks native
    pixels to leave out; 255 and marked pixels count nowhere. Raises ValueError if the counts of
    logits, masks and native masks differ, or ``native_ignore`` has other shapes than ``native``.
    """
    if not len(logits) == len(masks) == len(native):
        raise ValueError(f"{len(logits)} logits, {len(masks)} masks, {len(native)} native masks")
    if native_ignore is not None and not np.array_equal(native_ignore.shapes, native.shapes):
        raise ValueError("native_ignore masks differ in number or size from the native masks")
    at_size = confusion_counts(torch.sigmoid(torch.from_numpy(logits)) > threshold, torch.from_numpy(masks)).numpy()
    preds, rows = [], []
    for i, image_logits in enumerate(logits):
        truth = target_mask(native, native_ignore, i)
        pred = native_probabilities(image_logits, *truth.shape) > threshold
        preds.append(pred)
        rows.append(counts(pred, truth))
    return Scored(np.array(rows, np.int64).reshape(-1, 4), at_size, PackedMasks.pack(preds))


def choose_threshold(
    logits: np.ndarray,
    native: PackedMasks,
    grid: tuple[float, ...] = THRESHOLD_GRID,
    native_ignore: PackedMasks | None = None,
) -> float:
    """The threshold in ``grid`` with the highest dataset-level Dice at native resolution.

    Meant for the valid split (never test). ``logits`` float32 (N, S, S); ``native_ignore`` as in
    :func:`score`. Ties go to the threshold nearest 0.5, then the lower one.
    """
    thresholds = np.array(grid, np.float32)[:, None, None]
    total = np.zeros((len(grid), 3), np.int64)
    for i, image_logits in enumerate(logits):
        mask = target_mask(native, native_ignore, i)
        truth, background = mask == 1, mask == 0
        pred = native_probabilities(image_logits, *mask.shape)[None] > thresholds
        total += np.stack(
            [(pred & truth).sum((1, 2)), (pred & background).sum((1, 2)), (~pred & truth).sum((1, 2))], axis=1
        )
    dice = dice_from_counts(*torch.from_numpy(total).T).numpy()
    best = max(range(len(grid)), key=lambda k: (round(float(dice[k]), 12), -abs(grid[k] - 0.5), -grid[k]))
    return float(grid[best])


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
    truth's scored pixels, i.e. the ignored ones left out), dice, iou (at native resolution)."""
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


def summary(scored: Scored, species: list[str]) -> dict:
    """The metric keys of ``metrics/<model>.json`` that come from counts: dice, iou, dice_per_image,
    dice_per_image_median, pixel_accuracy (native), ``at_image_size`` {dice, iou, dice_per_image},
    ``species`` {name: {dice, dice_per_image, images}} and ``images``."""
    at_size = _scores(scored.at_size)
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
        **_scores(scored.native),
        "at_image_size": {k: at_size[k] for k in ("dice", "iou", "dice_per_image")},
        "species": by_species,
        "images": len(scored.native),
    }
