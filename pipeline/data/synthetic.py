"""A generated pets-like dataset in the official Oxford-IIIT Pet layout, for offline runs and tests.

Each image is a textured blob ("pet": a body ellipse, a head ellipse, two ear triangles) on a
textured background; its trimap follows the official convention (1 pet, 2 background, 3 a boundary
band around the outline). Half the stems go to test.txt, half to trainval.txt, like the real set.
"""

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# The official trimaps mark a band a few pixels wide along the outline as "boundary".
BOUNDARY_WIDTH = 5
LIST_HEADER = (
    "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n#SPECIES: 1:Cat 2:Dog\n"
    "#BREED ID: 1-25:Cat 1:12:Dog\n#All images with 1st letter as captial are cat images\n"
    "#images with small first letter are dog images\n"
)


def trainval_size(num_images: int) -> int:
    """How many of ``num_images`` pets :func:`make_synthetic` lists in trainval.txt: every other one, from the
    first (the rest go to test.txt)."""
    return len(range(num_images)[0::2])


def _texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Random stripes plus noise around a random colour: float (h, w, 3) in [0, 255]."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4)
    stripes = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))[..., None]
    base, amp = rng.uniform(40, 215, 3), rng.uniform(10, 40)
    return np.clip(base + amp * stripes + rng.normal(0, 12, (h, w, 3)), 0, 255)


def _pet_mask(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    mask = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(mask)
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.4, 0.7) * h
    bw, bh = rng.uniform(0.18, 0.3) * w, rng.uniform(0.15, 0.25) * h
    draw.ellipse([cx - bw, cy - bh, cx + bw, cy + bh], fill=1)
    hx, hy, r = cx + rng.uniform(-0.6, 0.6) * bw, cy - bh * rng.uniform(0.8, 1.2), rng.uniform(0.3, 0.5) * bh
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=1)
    for side in (-1, 1):
        ex = hx + side * 0.6 * r
        draw.polygon([(ex - 0.4 * r, hy - 0.5 * r), (ex + 0.4 * r, hy - 0.5 * r), (ex, hy - 1.6 * r)], fill=1)
    return mask


def make_synthetic(root: Path, num_images: int, seed: int) -> None:
    """Write ``num_images`` (>= 4) image/trimap pairs and the three list files under ``root``.

    Deterministic in ``seed``. Images are JPEGs of 128-256 x 128-256 pixels (varied, so resizing is
    exercised); stems are ``Synthcat_<i>`` (class 1, cat) and ``synthdog_<i>`` (class 2, dog).
    Raises ValueError if ``num_images`` < 4 (each split needs an image).
    """
    if num_images < 4:
        raise ValueError(f"synthetic num_images must be >= 4, got {num_images}")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "annotations" / "trimaps").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(num_images):
        h, w = (int(v) for v in rng.integers(128, 257, 2))
        mask = _pet_mask(rng, h, w)
        m = np.asarray(mask, dtype=bool)
        pixels = np.where(m[..., None], _texture(rng, h, w), _texture(rng, h, w)).astype(np.uint8)
        grow = mask.filter(ImageFilter.MaxFilter(BOUNDARY_WIDTH))
        shrink = mask.filter(ImageFilter.MinFilter(BOUNDARY_WIDTH))
        trimap = np.full((h, w), 2, np.uint8)
        trimap[np.asarray(shrink, dtype=bool)] = 1
        trimap[np.asarray(grow, dtype=bool) & ~np.asarray(shrink, dtype=bool)] = 3
        cat = i % 4 < 2
        stem = f"Synthcat_{i}" if cat else f"synthdog_{i}"
        Image.fromarray(pixels).save(root / "images" / f"{stem}.jpg", quality=90)
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{stem}.png")
        lines.append(f"{stem} {1 if cat else 2} {1 if cat else 2} 1\n")
    (root / "annotations" / "list.txt").write_text(LIST_HEADER + "".join(lines))
    (root / "annotations" / "trainval.txt").write_text("".join(lines[0::2]))
    (root / "annotations" / "test.txt").write_text("".join(lines[1::2]))


def _part_labels(rng: np.random.Generator, h: int, w: int, classes: int) -> np.ndarray:
    """A pet drawn in parts, each a class: body 1, head 2, ears 3, the part indices wrapping round to
    fit ``classes`` (so 2 classes give a one-class pet); background 0. uint8 (h, w)."""
    labels = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(labels)
    part = [1 + i % (classes - 1) for i in range(3)]
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.45, 0.7) * h
    bw, bh = rng.uniform(0.18, 0.3) * w, rng.uniform(0.15, 0.25) * h
    draw.ellipse([cx - bw, cy - bh, cx + bw, cy + bh], fill=part[0])
    hx, hy, r = cx + rng.uniform(-0.6, 0.6) * bw, cy - bh * rng.uniform(0.8, 1.2), rng.uniform(0.35, 0.5) * bh
    for side in (-1, 1):
        ex = hx + side * 0.6 * r
        draw.polygon([(ex - 0.5 * r, hy - 0.4 * r), (ex + 0.5 * r, hy - 0.4 * r), (ex, hy - 1.8 * r)], fill=part[2])
    draw.ellipse([hx - r, hy - r, hx + r, hy + r], fill=part[1])
    return np.asarray(labels)


def make_synthetic_folder(root: Path, num_images: int, seed: int, classes: int) -> None:
    """Write ``num_images`` (>= 4) pets drawn in parts as a folder dataset under ``root``: images/<stem>.jpg,
    masks/<stem>.png (class indices, mode L) and classes.yaml with ``classes`` (>= 2) names; each
    class has its own texture. Deterministic in ``seed``. Raises ValueError for fewer than 4 images or
    2 classes."""
    if num_images < 4 or classes < 2:
        raise ValueError(f"a synthetic folder needs >= 4 images and >= 2 classes, got {num_images} and {classes}")
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(num_images):
        h, w = (int(v) for v in rng.integers(96, 161, 2))
        labels = _part_labels(rng, h, w, classes)
        textures = np.stack([_texture(rng, h, w) for _ in range(classes)])
        pixels = np.take_along_axis(textures, labels[None, ..., None].astype(np.int64), 0)[0].astype(np.uint8)
        Image.fromarray(pixels).save(root / "images" / f"shape_{i}.jpg", quality=90)
        Image.fromarray(labels).save(root / "masks" / f"shape_{i}.png")
    names = ["background"] + [f"part{k}" for k in range(1, classes)]
    (root / "classes.yaml").write_text(f"classes: [{', '.join(names)}]\nignore_index: 255\n")
