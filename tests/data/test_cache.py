"""The streamed, memory-mapped cache: the arrays of the in-RAM decode it replaced, bit-identical for any
worker count, read-only maps that DataLoader workers share, and what an interruption leaves behind."""

import hashlib
import json
import mmap
import multiprocessing
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import stages.preprocess
import stages.split
from pipeline.core import orphans
from pipeline.core.errors import UserError
from pipeline.core.params import parse_params
from pipeline.core.runner import run_stage
from pipeline.data import build as data
from pipeline.data.build import build_cache, resolve_workers, write_cache
from pipeline.data.cache import HEADER_BYTES, CachedSplit, CacheRow, CacheWriter, load_cache, save_cache
from pipeline.data.dataset import SegmentationDataset
from pipeline.data.decode import BadPair, decode_pair, resize_pair
from pipeline.data.layout import UNKNOWN_SPECIES, breed_of, read_species, read_stems
from pipeline.data.loader import make_eval_loader
from pipeline.data.masks import IGNORE, PackedMasks
from pipeline.data.report import Skipped
from pipeline.data.synthetic import make_synthetic
from tests.support import REPO, shipped_params, write_params


def old_build_cache(root: Path, stems: list[str], size: int, boundary: str) -> CachedSplit:
    """pipeline.data.build.build_cache as it was before the cache was streamed (commit a7c4939), as the reference."""
    species = read_species(root / "annotations" / "list.txt")
    images = np.empty((len(stems), size, size, 3), np.uint8)
    masks = np.empty((len(stems), size, size), np.uint8)
    kept, native, ignored, skipped = [], [], [], []
    for stem in stems:
        try:
            image, mask = decode_pair(root, stem, boundary)
        except BadPair as err:
            skipped.append(Skipped(stem, err.reason, str(err)))
            continue
        images[len(kept)], masks[len(kept)] = resize_pair(image, mask, size)
        kept.append(stem)
        native.append(mask == 1)
        ignored.append(mask == IGNORE)
    return CachedSplit(
        images[: len(kept)],
        masks[: len(kept)],
        kept,
        PackedMasks.pack(native),
        [breed_of(s) for s in kept],
        [species.get(s, UNKNOWN_SPECIES) for s in kept],
        PackedMasks.pack(ignored) if boundary == "ignore" else None,
        tuple(skipped),
    )


def assert_same_split(got: CachedSplit, want: CachedSplit) -> None:
    np.testing.assert_array_equal(got.images, want.images)
    np.testing.assert_array_equal(got.masks, want.masks)
    assert got.images.dtype == want.images.dtype and got.masks.dtype == want.masks.dtype
    assert (got.stems, got.breeds, got.species) == (want.stems, want.breeds, want.species)
    for name in ("native", "native_ignore"):
        mine, theirs = getattr(got, name), getattr(want, name)
        assert (mine is None) == (theirs is None)
        for part in ("bits", "offsets", "shapes") if mine is not None else ():
            np.testing.assert_array_equal(getattr(mine, part), getattr(theirs, part), err_msg=f"{name}_{part}")


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


# --- the same arrays as before ------------------------------------------------------------------


def test_write_cache_holds_the_arrays_of_the_in_ram_decode_on_real_pets(pets_mini, tmp_path):
    # Every 6th real pair: the odd files (PNG or GIF named .jpg, palette trimaps) come from the whole set.
    stems = read_stems(pets_mini / "annotations" / "list.txt")[::6]
    used, skipped = write_cache(pets_mini, stems, tmp_path / "c", 64, "pet", workers=2, progress=False)
    want = old_build_cache(pets_mini, stems, 64, "pet")
    assert (used, skipped) == (len(want.stems), want.skipped)
    assert_same_split(load_cache(tmp_path / "c"), want)


@pytest.mark.parametrize("boundary", ["pet", "background", "ignore"])
def test_write_cache_and_build_cache_hold_the_arrays_of_the_in_ram_decode(synthetic_root, tmp_path, boundary):
    stems = read_stems(synthetic_root / "annotations" / "list.txt")
    want = old_build_cache(synthetic_root, stems, 32, boundary)
    write_cache(synthetic_root, stems, tmp_path / "c", 32, boundary, workers=2, progress=False)
    assert_same_split(load_cache(tmp_path / "c"), want)
    assert_same_split(build_cache(synthetic_root, stems, 32, boundary, progress=False, workers=2), want)


def test_the_cache_is_byte_identical_for_any_worker_count(synthetic_root, tmp_path):
    stems = read_stems(synthetic_root / "annotations" / "list.txt")
    for workers in (1, 2, 3):
        write_cache(synthetic_root, stems, tmp_path / str(workers), 32, "ignore", workers=workers, progress=False)
    save_cache(tmp_path / "saved", build_cache(synthetic_root, stems, 32, "ignore", progress=False))
    assert digests(tmp_path / "1") == digests(tmp_path / "2") == digests(tmp_path / "3") == digests(tmp_path / "saved")


def test_the_stage_writes_the_same_cache_with_1_and_2_workers(synthetic_root, tmp_path):
    splits = tmp_path / "splits"
    params = write_params(tmp_path / "params.yaml", image_size=32)
    assert (
        run_stage(stages.split.main, ["--params", str(params), "--raw", str(synthetic_root), "--out", str(splits)]) == 0
    )
    caches = {}
    for workers in (1, 2):
        params = write_params(tmp_path / "params.yaml", image_size=32, preprocess={"workers": workers})
        out = tmp_path / f"cache{workers}"
        args = ["--params", str(params), "--raw", str(synthetic_root), "--splits", str(splits), "--out", str(out)]
        assert (
            run_stage(
                stages.preprocess.main,
                [
                    *args,
                    "--metrics",
                    str(Path(tmp_path / "data.json").with_name("skipped.json")),
                    "--report",
                    str(tmp_path / "data.json"),
                ],
            )
            == 0
        )
        caches[workers] = {name: digests(out / name) for name in ("train", "valid", "test")}
    assert caches[1] == caches[2]


# --- reading: read-only maps, shared with DataLoader workers ------------------------------------


@pytest.fixture(scope="module")
def mapped(synthetic_root, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("mapped") / "train"
    stems = read_stems(synthetic_root / "annotations" / "list.txt")
    write_cache(synthetic_root, stems, path, 32, "ignore", workers=2, progress=False)
    return path


def test_load_cache_maps_the_arrays_read_only(mapped):
    split = load_cache(mapped)
    for array in (split.images, split.masks, split.native.bits, split.native_ignore.offsets):
        assert isinstance(array, np.memmap) and isinstance(array.base, mmap.mmap) and not array.flags.writeable
    assert split.images.offset == HEADER_BYTES and HEADER_BYTES % 64 == 0  # aligned, as np.save aligns
    with pytest.raises(ValueError, match="read-only"):
        split.images[0, 0, 0] = 1
    np.testing.assert_array_equal(np.load(mapped / "images.npy"), split.images)  # plain .npy: readable whole too


def test_the_dataset_copies_items_out_of_the_map_without_warnings(mapped):
    split = load_cache(mapped)
    in_ram = SegmentationDataset(np.array(split.images), np.array(split.masks))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns when it wraps a read-only array
        on_map = SegmentationDataset(split.images, split.masks)
        for i in range(len(on_map)):
            image, mask, _ = on_map[i]
            expected_image, expected_mask, _ = in_ram[i]
            assert torch.equal(image, expected_image) and torch.equal(mask, expected_mask)


class _Probe(SegmentationDataset):
    """Items plus, from the process that made them, its pid and whether the images are still the mapping."""

    def __getitem__(self, i: int):
        image, mask, _ = super().__getitem__(i)
        return image, mask, os.getpid(), isinstance(self.images.base, mmap.mmap)


def test_dataloader_workers_read_the_shared_map(mapped):
    split = load_cache(mapped)
    in_ram = SegmentationDataset(np.array(split.images), np.array(split.masks))
    loader = make_eval_loader(_Probe(split.images, split.masks), 4, num_workers=2, device_type="cpu")
    seen, pids = 0, set()
    for images, masks, pid, still_mapped in loader:
        assert still_mapped.all()  # the workers got the mapping itself, not a pickled copy
        pids.update(pid.tolist())
        for image, mask in zip(images, masks, strict=True):
            assert torch.equal(image, in_ram[seen][0]) and torch.equal(mask, in_ram[seen][1])
            seen += 1
    assert seen == len(split.stems) and os.getpid() not in pids and len(pids) == 2


# --- malformed input ----------------------------------------------------------------------------


def _split(n: int = 2, size: int = 8) -> dict:
    masks = np.zeros((n, size, size), np.uint8)
    return {
        "images": np.zeros((n, size, size, 3), np.uint8),
        "masks": masks,
        "stems": [f"s_{i}" for i in range(n)],
        "native": PackedMasks.pack(masks),
        "breeds": ["s"] * n,
        "species": ["cat"] * n,
    }


@pytest.mark.parametrize(
    "change, message",
    [
        ({"images": np.zeros((2, 8, 8, 3), np.float32)}, r"images must be uint8 \(N, H, W, 3\), got float32"),
        ({"images": np.zeros((2, 8, 9, 3), np.uint8), "masks": np.zeros((2, 8, 9), np.uint8)}, "8x9 canvas needs"),
        ({"sizes": np.array([[8, 8], [8, 9]])}, r"sizes must be \(N, 2\) within the 8x8 canvas"),
        ({"masks": np.zeros((2, 8, 8), bool)}, r"masks must be uint8 \(2, 8, 8\) as the images, got bool"),
        ({"stems": ["a"]}, "2 images but 1 stems, 2 breeds, 2 species, 2 native masks"),
        ({"native": PackedMasks(np.zeros(16, np.uint8), np.array([0, 8, 8]), np.full((2, 2), 8))}, "native offsets"),
    ],
)
def test_a_split_of_inconsistent_arrays_is_rejected(change, message):
    with pytest.raises(ValueError, match=message):
        CachedSplit(**(_split() | change))


def test_only_2d_masks_pack():
    with pytest.raises(ValueError, match=r"expected a 2-D mask, got shape \(2, 3, 4\)"):
        PackedMasks.pack([np.zeros((2, 3, 4), np.uint8)])
    packed = PackedMasks.pack([np.eye(3, dtype=bool), np.ones((1, 9), np.uint8)])
    assert [len(packed.packed(i)) for i in range(2)] == [2, 2]  # 9 pixels: two bytes, the last padded
    np.testing.assert_array_equal(packed[0], np.eye(3, dtype=np.uint8))


def test_the_writer_rejects_an_image_of_another_size(tmp_path):
    row = CacheRow("a_1", "a", "cat", np.zeros((9, 9, 3), np.uint8), np.zeros((8, 8), np.uint8), (8, 8), np.zeros(8))
    with pytest.raises(ValueError, match=r"images.npy: rows must be uint8 \(8, 8, 3\), got uint8 \(9, 9, 3\)"):
        with CacheWriter(tmp_path / "c", (8, 8), ignore=False) as writer:
            writer.add(row)
    assert not (tmp_path / "c" / "meta.json").exists()  # left incomplete for atomic_path to remove


def _edit_meta(folder, edit):
    meta = json.loads((folder / "meta.json").read_text())
    edit(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: (p / "images.npy").unlink(), r"\(no images\)"),
        (lambda p: (p / "meta.json").write_text("{}"), r"\(no classes\)"),
        (lambda p: _edit_meta(p, lambda m: m.pop("stems")), r"\(no stems\)"),
        (lambda p: (p / "meta.json").write_text("[1, 2]"), r"\(list indices must be integers"),
        (lambda p: (p / "meta.json").unlink(), r"\(\[Errno 2\] No such file or directory"),
        (lambda p: _edit_meta(p, lambda m: m.update({k: ["x"] * 3 for k in ("stems", "breeds", "species")})),
         r"\(2 images but 3 stems"),
    ],
)  # fmt: skip
def test_a_damaged_cache_folder_is_one_line(tmp_path, damage, message):
    save_cache(tmp_path / "c", CachedSplit(**_split()))
    damage(tmp_path / "c")
    with pytest.raises(UserError, match=rf"c: not a petseg cache {message}.*; run `dvc repro -f preprocess`$"):
        load_cache(tmp_path / "c")


def test_load_cache_missing_file_raises_user_error(tmp_path):
    path = tmp_path / "nope"
    with pytest.raises(UserError, match=r"nope: cache not found; run `dvc repro preprocess`"):
        load_cache(path)


def test_load_cache_not_a_cache_raises_user_error(tmp_path):
    # An .npz cache of an older petseg, and a folder of something else.
    path = tmp_path / "other.npz"
    np.savez(path, something=np.zeros(3))
    with pytest.raises(UserError, match=r"other.npz: not a petseg cache \(.*\); run `dvc repro -f preprocess`"):
        load_cache(path)
    (tmp_path / "folder").mkdir()
    np.save(tmp_path / "folder" / "something.npy", np.zeros(3))
    with pytest.raises(UserError, match="folder: not a petseg cache"):
        load_cache(tmp_path / "folder")


@pytest.mark.parametrize("name", ["images.npy", "native_bits.npy", "meta.json"])
@pytest.mark.parametrize("keep", [0, 0.1, 0.5], ids=["empty", "a_tenth", "half"])
def test_load_cache_truncated_file_raises_user_error(tmp_path, name, keep):
    masks = np.ones((2, 8, 8), np.uint8)
    split = CachedSplit(
        np.zeros((2, 8, 8, 3), np.uint8), masks, ["a", "b"], PackedMasks.pack(masks), ["a", "b"], ["cat"] * 2
    )
    path = tmp_path / "cut"
    save_cache(path, split)
    part = path / name
    part.write_bytes(part.read_bytes()[: int(keep * part.stat().st_size)])
    with pytest.raises(UserError, match=r"cut: not a petseg cache \(.+\); run `dvc repro -f preprocess`"):
        load_cache(path)


def test_native_ignore_of_other_shapes_is_rejected(tmp_path):
    masks = np.zeros((2, 8, 8), np.uint8)
    other = PackedMasks.pack([np.zeros((8, 8)), np.zeros((8, 9))])
    images = np.zeros((2, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="native_ignore"):
        CachedSplit(images, masks, ["a", "b"], PackedMasks.pack(masks), ["a", "b"], ["cat"] * 2, other)
    # The same in a file is a malformed cache: one line naming the folder.
    path = tmp_path / "odd"
    split = CachedSplit(images, masks, ["a", "b"], PackedMasks.pack(masks), ["a", "b"], ["cat"] * 2)
    save_cache(path, split)
    for name, array in other.to_arrays("native_ignore").items():
        np.save(path / f"{name}.npy", array)
    with pytest.raises(UserError, match="odd: not a petseg cache .*native_ignore masks differ"):
        load_cache(path)


# --- interruptions ------------------------------------------------------------------------------


def test_an_interrupted_write_leaves_no_folder_and_no_workers(synthetic_root, tmp_path, monkeypatch):
    added = []

    def add(writer, row):
        if len(added) == 3:
            raise KeyboardInterrupt
        added.append(row.stem)

    monkeypatch.setattr(CacheWriter, "add", add)
    stems = read_stems(synthetic_root / "annotations" / "list.txt")
    with pytest.raises(KeyboardInterrupt):
        write_cache(synthetic_root, stems, tmp_path / "c", 32, "pet", workers=2, progress=False)
    assert list(tmp_path.iterdir()) == []
    assert multiprocessing.active_children() == []  # the pool was shut down, its workers joined


KILLED = """
import sys
from pathlib import Path
from pipeline.data.build import write_cache
from pipeline.data.layout import read_stems
root = Path(sys.argv[1])
write_cache(root, read_stems(root / "annotations" / "list.txt"), Path(sys.argv[2]), 256, "pet", workers=2)
"""


@pytest.mark.e2e
def test_workers_die_with_a_parent_killed_by_sigkill(tmp_path):
    psutil = pytest.importorskip("psutil")
    make_synthetic(tmp_path / "raw", 400, seed=0)
    dest = tmp_path / "out" / "c"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, str(tmp_path / "raw"), str(dest)], cwd=REPO, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 60
        while len(workers := psutil.Process(proc.pid).children()) < 2:
            assert proc.poll() is None and time.monotonic() < deadline, "no decode workers started"
            time.sleep(0.01)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []  # no orphans waiting for tasks forever
    assert not dest.exists() and [p.name for p in dest.parent.iterdir()] == [f".c.tmp-{proc.pid}"]
    # The next write removes the dead writer's temporary.
    write_cache(tmp_path / "raw", ["Synthcat_0"], dest, 32, "pet", progress=False)
    assert [p.name for p in dest.parent.iterdir()] == ["c"]


def test_a_worker_ignores_ctrl_c_and_needs_no_prctl(monkeypatch):
    handlers = []
    monkeypatch.setattr(data.signal, "signal", lambda *args: handlers.append(args))
    monkeypatch.setattr(orphans.ctypes, "CDLL", lambda _: object())  # a libc without prctl (not Linux)
    data._init_worker(os.getppid())
    assert handlers == [(signal.SIGINT, signal.SIG_IGN)]
    assert orphans.die_with_parent() is False


# --- preprocess.workers ---------------------------------------------------------------------------


def test_workers_auto_is_one_per_cpu(monkeypatch):
    assert resolve_workers(3) == 3
    monkeypatch.setattr(data.os, "cpu_count", lambda: 5)
    assert resolve_workers("auto") == 5
    monkeypatch.setattr(data.os, "cpu_count", lambda: None)
    assert resolve_workers("auto") == 1


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "all"])
def test_preprocess_workers_must_be_auto_or_a_count(value):
    params = shipped_params()
    params["preprocess"]["workers"] = value
    with pytest.raises(UserError, match=rf"preprocess.workers: must be auto or a whole number >= 1, got {value!r}"):
        parse_params(params)
    params["preprocess"]["workers"] = 2
    assert parse_params(params).preprocess.workers == 2
    del params["preprocess"]["workers"]
    assert parse_params(params).preprocess.workers == "auto"
