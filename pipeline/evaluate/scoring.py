"""Test-set scoring of any task, at the photos' own resolution and at the cache's size, and the threshold
search of a binary task on valid.

Each image gets a C×C confusion matrix (:mod:`pipeline.evaluate.confusion`; a binary task is C = 2), at
native size (its logits resized bilinearly to its mask, then :func:`~pipeline.evaluate.confusion.to_labels`)
and at the cache's square size. Every score and table comes from those matrices
(:mod:`pipeline.evaluate.tables`). Pixels the cache marks ignored (255, or ``native_ignore`` under
preprocess.boundary: ignore) are in no count.
"""

from dataclasses import dataclass

import numpy as np
import torch

from pipeline.core.constants import DEFAULT_THRESHOLD
from pipeline.data.geometry import extents
from pipeline.data.masks import LABELS, PackedMasks, pack_mask, target_mask
from pipeline.evaluate.confusion import ConfusionMeter, dice_from_counts
from pipeline.evaluate.inference import native_labels, resize_logits

# evaluate.threshold: auto searches 0.05, 0.10, ..., 0.95.
THRESHOLD_GRID = tuple(round(0.05 * k, 2) for k in range(1, 20))


@dataclass(frozen=True)
class Scored:
    """Per-image results: ``native`` and ``at_size`` confusion matrices int64 (N, C, C) (rows true class,
    columns predicted, pixels), and the predicted label maps at native resolution (``predictions``, packed
    at the depth of the truth: bits for a binary task, a byte a pixel for more classes)."""

    native: np.ndarray
    at_size: np.ndarray
    predictions: PackedMasks


def _check_ignore(native: PackedMasks, native_ignore: PackedMasks | None) -> None:
    if native_ignore is not None and not np.array_equal(native_ignore.shapes, native.shapes):
        raise ValueError("native_ignore masks differ in number or size from the native masks")


class Scorer:
    """Scores logits batch by batch, so memory holds one batch of logits, not the split's.

    ``masks`` uint8 (N, S, S) class indices and 255 (ignored) are the at-size ground truth (a memory map is
    fine: it is read one batch at a time); ``native`` the N masks at each photo's own size (:class:`PackedMasks`
    of any depth); ``native_ignore`` (optional, the shapes of ``native``) marks native pixels to leave out;
    ``num_classes`` C; ``threshold`` the sigmoid threshold of a binary task's one logit (unused for more
    classes); ``sizes`` (optional) int (N, 2) each image's (height, width) on the masks' canvas, its logits
    cut to it before they are resized to the native mask (None: the whole canvas). Raises ValueError if the
    counts of masks and native masks differ, ``native_ignore`` has other
    shapes than ``native``, or more than two classes come with bit-packed native masks; :meth:`add` raises
    it on a class index outside 0..C-1, or on logits whose channels do not fit C. Both sizes count through a
    :class:`~pipeline.evaluate.confusion.ConfusionMeter`, whose per-image matrices are kept.
    """

    def __init__(
        self,
        masks: np.ndarray,
        native: PackedMasks,
        num_classes: int,
        threshold: float = DEFAULT_THRESHOLD,
        native_ignore: PackedMasks | None = None,
        sizes: np.ndarray | None = None,
    ):
        if len(masks) != len(native):
            raise ValueError(f"{len(masks)} masks, {len(native)} native masks")
        _check_ignore(native, native_ignore)
        if num_classes > 2 and native.depth != LABELS:
            raise ValueError(
                f"native masks of {num_classes} classes must be label maps (depth {LABELS}), got depth {native.depth}"
            )
        self.masks, self.native, self.ignore = masks, native, native_ignore
        self.sizes = extents(masks.shape, sizes)
        self.meters = {"at_size": ConfusionMeter(num_classes, threshold), "native": ConfusionMeter(num_classes)}
        self.threshold = threshold
        n, c = len(masks), num_classes
        # Made up front: small arrays kept an image at a time between the large ones freed an image at a
        # time fragment glibc's heap, which then grows with the split.
        self.at_size = np.zeros((n, c, c), np.int64)
        self.native_matrices = np.zeros((n, c, c), np.int64)
        # A prediction has its truth's shape and depth, so it packs into the same bytes: one buffer.
        self.bits = np.empty(len(native.bits), np.uint8)
        self.seen = 0

    def add(self, logits: np.ndarray) -> None:
        """Score the next images' logits float32 (B, L, S, S) (L = 1 for two classes, else C), in the order
        of ``masks``. Raises ValueError if more logits come than there are masks, or L does not fit C."""
        start, stop = self.seen, self.seen + len(logits)
        if stop > len(self.masks):
            raise ValueError(f"{stop} logits, {len(self.masks)} masks")
        truth = torch.from_numpy(np.array(self.masks[start:stop]))
        self.at_size[start:stop] = self.meters["at_size"].update(torch.from_numpy(logits), truth).numpy()
        for i, image_logits in enumerate(logits, start):
            truth = target_mask(self.native, self.ignore, i)
            height, width = self.sizes[i]
            pred = native_labels(image_logits[:, :height, :width], *truth.shape, self.threshold)
            self.bits[self.native.offsets[i] : self.native.offsets[i + 1]] = pack_mask(pred, self.native.depth)
            matrix = self.meters["native"].add(torch.from_numpy(pred[None]), torch.from_numpy(truth[None]))
            self.native_matrices[i] = matrix[0].numpy()
        self.seen = stop

    def result(self) -> Scored:
        """The :class:`Scored` of every image. Raises ValueError if fewer logits came than masks."""
        if self.seen != len(self.masks):
            raise ValueError(f"{self.seen} logits, {len(self.masks)} masks")
        native = self.native
        predictions = PackedMasks(self.bits, np.array(native.offsets), np.array(native.shapes), native.depth)
        return Scored(self.native_matrices, self.at_size, predictions)


def score(
    logits: np.ndarray,
    masks: np.ndarray,
    native: PackedMasks,
    num_classes: int,
    threshold: float = DEFAULT_THRESHOLD,
    native_ignore: PackedMasks | None = None,
) -> Scored:
    """Score logits float32 (N, L, S, S) held in memory at once (a :class:`Scorer` given one batch).
    Arguments and errors as in :class:`Scorer`; also raises ValueError if fewer logits come than masks."""
    scorer = Scorer(masks, native, num_classes, threshold, native_ignore)
    scorer.add(logits)
    return scorer.result()


class ThresholdSearch:
    """The threshold in ``grid`` with the highest dataset-level Dice at native resolution of a binary task,
    fed batch by batch (memory: one batch of logits).

    Meant for the valid split (never test). ``native``, ``native_ignore`` and ``sizes`` as in :class:`Scorer`. Ties go
    to the threshold nearest 0.5, then the lower one. The counts of every threshold come at once from one
    resize per image: TP, FP and FN of class 1, as :mod:`pipeline.evaluate.confusion` defines them.
    """

    def __init__(
        self,
        native: PackedMasks,
        grid: tuple[float, ...] = THRESHOLD_GRID,
        native_ignore: PackedMasks | None = None,
        sizes: np.ndarray | None = None,
    ):
        _check_ignore(native, native_ignore)
        self.native, self.ignore, self.grid, self.sizes = native, native_ignore, grid, sizes
        self.thresholds = np.array(grid, np.float32)[:, None, None]
        self.total = np.zeros((len(grid), 3), np.int64)
        self.seen = 0

    def add(self, logits: np.ndarray) -> None:
        """Count the next images' logits float32 (B, 1, S, S), in the order of ``native``. Raises
        ValueError if more logits come than there are masks, or they have other than one channel."""
        if logits.ndim != 4 or logits.shape[1] != 1:
            raise ValueError(f"a threshold applies to one logit: expected (B, 1, S, S), got shape {logits.shape}")
        if self.seen + len(logits) > len(self.native):
            raise ValueError(f"{self.seen + len(logits)} logits, {len(self.native)} native masks")
        for i, image_logits in enumerate(logits, self.seen):
            mask = target_mask(self.native, self.ignore, i)
            truth, background = mask == 1, mask == 0
            height, width = image_logits.shape[1:] if self.sizes is None else self.sizes[i]
            probabilities = torch.sigmoid(resize_logits(image_logits[:, :height, :width], *mask.shape))[0, 0].numpy()
            pred = probabilities[None] > self.thresholds
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
    """:class:`ThresholdSearch` over logits float32 (N, 1, S, S) held in memory at once."""
    search = ThresholdSearch(native, grid, native_ignore)
    search.add(logits)
    return search.best()
