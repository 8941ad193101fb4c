"""Choices and defaults of the ``petseg`` command, importable without torch: the argument parser is
built from them before any model code loads, so ``petseg --help`` and a usage error answer at once."""

# File extensions `petseg predict` takes from a folder (case-insensitive); a file named on the command
# line is taken whatever its extension, as images are decoded by content.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff")
DEFAULT_TTA = "none"
DEFAULT_BATCH_SIZE = 8  # images per forward pass of `petseg predict`

# `petseg diff`: paired bootstrap resamples of the test images, their seed, and the interval's level.
BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0
CONFIDENCE = 0.95

# `petseg seeds --save`'s file, which `petseg diff` reads each model's seed spread from (git-tracked, not a DVC
# output: it summarises experiments, no stage writes it).
SEEDS_FILE = "metrics/seeds.json"
