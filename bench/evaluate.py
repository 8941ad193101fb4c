"""Benchmark of the evaluate stage's memory: scored batch by batch, it should not grow with the split.

Usage: python bench/evaluate.py [--images 1000 4000] [--size 256] [--batch-size 32]

Builds, in a temporary folder, synthetic test caches of each ``--images`` count N at ``--size`` S px
(written with :class:`pipeline.data.cache.CacheWriter`: memory-mapped .npy; random images, elliptic
masks, native masks of photo sizes such as 500x375 px), a tiny UNet checkpoint (base_channels 4,
untrained, :func:`pipeline.models.checkpoint.save_checkpoint`) and its ONNX export
(:func:`pipeline.evaluate.export.export_checked`). Then, for each N, one run on this machine (children with
OMP_NUM_THREADS=1; numbers vary with load, the ratios are the point), prints a Markdown table of:
- the real stage (``python -m stages.evaluate``, evaluate.threshold 0.5, tta none) as a subprocess;
- the whole-split reference: a subprocess calling :func:`pipeline.evaluate.inference.predict_logits` then
  :func:`pipeline.evaluate.scoring.score` on the same files (all the logits at once; today's ``score``
  packs each prediction as it goes, where the stage's old code also held them all unpacked);
with each one's peak RSS in MB (``os.wait4``'s ru_maxrss: it counts the touched pages of the
memory-mapped cache, N·S·S·4 bytes of images and masks, which the OS may drop at will), its peak
anonymous RSS in MB (RSS less file-backed and shared pages, sampled every 50 ms with psutil: the
memory the process itself holds), the logits' size N·S·S·4 bytes in MB, the packed native
predictions any run keeps for its output (MB), and wall seconds.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.report import machine, table  # noqa: E402
from pipeline.data.cache import CacheRow, CacheWriter, load_cache  # noqa: E402
from pipeline.data.classes import BINARY_PETS, classes_to_json  # noqa: E402
from pipeline.data.masks import pack_mask  # noqa: E402
from pipeline.evaluate.export import export_checked  # noqa: E402
from pipeline.evaluate.inference import prepare  # noqa: E402
from pipeline.models.checkpoint import save_checkpoint  # noqa: E402
from pipeline.models.registry import build_model  # noqa: E402

MB = 1 << 20
SHAPES = ((375, 500), (500, 375), (333, 500), (500, 333), (300, 400), (400, 300))  # (height, width) px
ARCH = {"base_channels": 4, "bilinear": False}
# The whole-split path, as the stage ran before: every logit of the split in one array, then scored.
WHOLE_SPLIT = """
import sys
from pathlib import Path
from pipeline.data.cache import load_cache
from pipeline.core.device import choose_device
from pipeline.evaluate.scoring import score
from pipeline.evaluate.inference import load_model, predict_logits
model = load_model(Path(sys.argv[1]), choose_device("auto").value)
test = load_cache(Path(sys.argv[2]))
logits, _ = predict_logits(model.forward, test.images, int(sys.argv[3]), "none")
score(logits, test.masks, test.native, test.classes.count, 0.5, test.native_ignore)
"""


def ellipse(height: int, width: int) -> np.ndarray:
    """uint8 (height, width) in {0, 1}: a centred ellipse covering about 38% of the frame."""
    y, x = np.ogrid[:height, :width]
    return (((y + 0.5) / height - 0.5) ** 2 + ((x + 0.5) / width - 0.5) ** 2 < 0.12).astype(np.uint8)


def write_split(folder: Path, n: int, size: int, seed: int) -> None:
    """A split cache of ``n`` pairs at ``size`` px: images cycle through 16 random ones (fast to build)."""
    rng = np.random.default_rng(seed)
    pool = rng.integers(0, 256, (16, size, size, 3), dtype=np.uint8)
    mask, natives = ellipse(size, size), [(shape, pack_mask(ellipse(*shape))) for shape in SHAPES]
    with CacheWriter(folder, (size, size), ignore=False) as writer:
        for i in range(n):
            breed, species = ("Synthcat", "cat") if i % 2 else ("synthdog", "dog")
            shape, bits = natives[i % len(natives)]
            writer.add(CacheRow(f"{breed}_{i}", breed, species, pool[i % len(pool)], mask, shape, bits))


def packed_bytes(n: int) -> int:
    """Bytes of ``n`` native masks of :data:`SHAPES` packed 8 pixels a byte (the stage's predictions)."""
    return sum(-(-h * w // 8) for h, w in (SHAPES[i % len(SHAPES)] for i in range(n)))


def peak_memory(command: list[str]) -> dict:
    """Run ``command`` from the repository with OMP_NUM_THREADS=1: its peak RSS (ru_maxrss) and peak
    anonymous RSS (sampled every 50 ms), in MB, and its wall seconds. Exits if it fails."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    watched, anon, start = psutil.Process(proc.pid), 0, time.perf_counter()
    # wait4 without blocking until the command ends: it reaps it and returns its rusage.
    while not (done := os.wait4(proc.pid, os.WNOHANG))[0]:
        try:
            info = watched.memory_info()
            anon = max(anon, info.rss - info.shared)  # shared: file-backed (the mapped cache) and shmem
        except psutil.Error:  # ended between wait4 and the reading
            pass
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(done[1])  # reaped above: Popen must not wait for it
    if proc.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {proc.stderr.read()}")
    return {"rss": done[2].ru_maxrss / 1024, "anon": anon / MB, "seconds": seconds}  # ru_maxrss: kB on Linux


def setup(work: Path, size: int, batch_size: int) -> list[str]:
    """params.yaml, a valid cache, checkpoint and ONNX file in ``work``; the stage's common arguments."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["image_size"] = size
    params["evaluate"].update(threshold=0.5, tta="none", batch_size=batch_size)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    write_split(work / "valid", 8, size, seed=1)  # not read under threshold 0.5, but a real cache
    model = build_model("unet", **ARCH)
    classes = classes_to_json(BINARY_PETS)
    resize = {"mode": "square", "side": size}
    info = {"epoch": 1, "valid_dice": 0.0, "image_size": size, "out_channels": 1, "classes": classes, "resize": resize}
    save_checkpoint(work / "unet.pt", "unet", ARCH, model.state_dict(), **info)
    images = prepare(load_cache(work / "valid").images[: params["export"]["check_images"]])
    metadata = {"model": "unet", "image_size": str(size), "best_epoch": "1", "classes": json.dumps(classes)}
    metadata["resize"] = json.dumps(resize)
    export_checked(model, work / "unet.onnx", metadata, images, params["export"]["opset"], 1e-3)
    names = ("metrics", "per-image", "per-breed", "predictions", "record")
    outputs = ("unet.json", "per_image.csv", "per_breed.csv", "pred.npz", "unet.eval.json")
    args = ["--params", "params.yaml", "--checkpoint", "unet.pt", "--onnx", "unet.onnx", "--valid", "valid"]
    args += [item for name, out in zip(names, outputs, strict=True) for item in (f"--{name}", out)]
    return [arg if arg.startswith("--") else str(work / arg) for arg in args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 4000], help="test split sizes N")
    parser.add_argument("--size", type=int, default=256, help="image_size S, pixels (a multiple of 32)")
    parser.add_argument("--batch-size", type=int, default=32, help="evaluate.batch_size, images")
    args = parser.parse_args()
    before = machine()
    rows, runs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print("building the checkpoint and ONNX file ...", file=sys.stderr, flush=True)
        stage = [sys.executable, "-m", "stages.evaluate", *setup(work, args.size, args.batch_size)]
        for n in args.images:
            print(f"N = {n}: cache, stage, whole-split ...", file=sys.stderr, flush=True)
            runs[n] = measure(work, stage, n, args.size, args.batch_size)
            rows.append(row(n, args.size, *runs[n]))
    print(f"Machine at the start: {before}\n")
    print(f"Evaluate stage vs whole-split logits, UNet base_channels 4, batch {args.batch_size}, CPU children:\n")
    print(table(rows) + "\n")
    small, large = min(runs), max(runs)
    if small != large:
        grew = {k: runs[large][0][k] - runs[small][0][k] for k in ("rss", "anon")}
        logits = (large - small) * args.size**2 * 4 / MB
        print(
            f"Target: the stage's RSS stays flat from N = {small} to {large}. Stage grew {grew['rss']:+.0f} MB RSS, "
            f"{grew['anon']:+.0f} MB anon; the logits grew {logits:+.0f} MB "
            f"(whole-split anon {runs[large][1]['anon'] - runs[small][1]['anon']:+.0f} MB).\n"
        )
    print(f"Machine at the end: {machine()}")


def measure(work: Path, stage: list[str], n: int, size: int, batch_size: int) -> tuple[dict, dict]:
    """:func:`peak_memory` of the stage and of the whole-split reference on a test cache of ``n`` pairs
    at ``size`` px, written in ``work`` and deleted afterwards (the next N's cache replaces it)."""
    test = work / f"test-{n}"
    write_split(test, n, size, seed=0)
    streamed = peak_memory([*stage, "--test", str(test)])
    whole = peak_memory([sys.executable, "-c", WHOLE_SPLIT, str(work / "unet.pt"), str(test), str(batch_size)])
    shutil.rmtree(test)
    return streamed, whole


def row(n: int, size: int, streamed: dict, whole: dict) -> dict[str, object]:
    """The table's row for ``n`` pairs at ``size`` px: sizes in MB, peaks in MB and their ratios, seconds."""
    return {
        "N": n,
        "S (px)": size,
        "logits N·S·S·4 (MB)": f"{n * size**2 * 4 / MB:.0f}",
        "packed predictions (MB)": f"{packed_bytes(n) / MB:.0f}",
        "stage peak RSS (MB)": f"{streamed['rss']:.0f}",
        "stage peak anon RSS (MB)": f"{streamed['anon']:.0f}",
        "whole-split peak RSS (MB)": f"{whole['rss']:.0f}",
        "whole-split peak anon RSS (MB)": f"{whole['anon']:.0f}",
        "whole-split / stage, RSS": f"{whole['rss'] / streamed['rss']:.2f}x",
        "whole-split / stage, anon": f"{whole['anon'] / streamed['anon']:.2f}x",
        "stage (s)": f"{streamed['seconds']:.1f}",
        "whole-split (s)": f"{whole['seconds']:.1f}",
    }


if __name__ == "__main__":
    main()
