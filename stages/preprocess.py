"""Stage `preprocess`: decode, resize and binarise every split once into uint8 .npz caches."""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.cli import run_stage
from pipeline.data import build_cache, save_cache
from pipeline.errors import UserError
from pipeline.io import atomic_path
from pipeline.layout import read_stems
from pipeline.models.blocks import SIZE_MULTIPLE
from pipeline.params import BOUNDARY_POLICIES, get_choice, get_int, load_params, section


def main(argv: Sequence[str] | None = None) -> None:
    """Parse args, read image_size and preprocess.*, write one .npz cache per split. Raises UserError."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", required=True)
    parser.add_argument("--raw", required=True, help="dataset folder in the official layout")
    parser.add_argument("--splits", required=True, help="folder with train.txt, valid.txt, test.txt")
    parser.add_argument("--out", required=True, help="folder for train.npz, valid.npz, test.npz")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    size = get_int(params, "image_size", minimum=SIZE_MULTIPLE)
    if size % SIZE_MULTIPLE:
        raise UserError(f"params.yaml: image_size must be a multiple of {SIZE_MULTIPLE}, got {size}")
    boundary = get_choice(section(params, "preprocess"), "boundary", BOUNDARY_POLICIES, "preprocess.")
    # All three splits or none: a bad image in test must not leave train.npz behind.
    with atomic_path(args.out) as out:
        for name in ("train", "valid", "test"):
            stems = read_stems(Path(args.splits) / f"{name}.txt")
            save_cache(out / f"{name}.npz", build_cache(Path(args.raw), stems, size, boundary))
            print(f"preprocess: {name}: {len(stems)} images at {size}x{size}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
