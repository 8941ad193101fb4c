"""Bad pairs in the dataset: skipped, counted by reason in metrics/data.json, and failing the run only
past data.max_bad_fraction (or when a split is left empty)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stages.preprocess
import stages.split
from pipeline.core.errors import UserError
from pipeline.core.runner import run_stage
from pipeline.data.build import build_cache, write_cache
from pipeline.data.cache import load_cache, save_cache
from pipeline.data.layout import image_path, read_stems, trimap_path
from pipeline.data.report import (
    BAD_TRIMAP_VALUES,
    DUPLICATE,
    GARBAGE_LINE,
    MISSING_FILE,
    REASONS,
    SIZE_MISMATCH,
    UNDECODABLE_IMAGE,
    UNDECODABLE_TRIMAP,
    Skipped,
    build_report,
    check_report,
    read_split_summary,
)
from pipeline.data.synthetic import make_synthetic
from tests.support import REPO, data_params

SPLITS = ("train", "valid", "test")


def _truncate_image(root: Path, stem: str) -> None:
    path = image_path(root, stem)
    with Image.open(path) as img:
        assert img.format == "JPEG"  # a real JPEG, cut in half
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _resize_trimap(root: Path, stem: str) -> None:
    path = trimap_path(root, stem)
    with Image.open(path) as tri:
        tri.resize((tri.width + 3, tri.height), Image.Resampling.NEAREST).save(path)


@pytest.fixture(scope="module")
def two_bad(tmp_path_factory) -> tuple[Path, str, str]:
    """42 synthetic pairs: a truncated JPEG in trainval and a trimap of the wrong size in test."""
    root = tmp_path_factory.mktemp("two_bad")
    make_synthetic(root, 42, seed=3)
    cut = read_stems(root / "annotations" / "trainval.txt")[3]
    wide = read_stems(root / "annotations" / "test.txt")[5]
    _truncate_image(root, cut)
    _resize_trimap(root, wide)
    return root, cut, wide


def _python(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def _stage_scripts(raw: Path, tmp_path: Path, max_bad_fraction: float) -> tuple[subprocess.CompletedProcess, Path]:
    params = data_params(tmp_path, image_size=32, max_bad_fraction=max_bad_fraction)
    split = _python("stages.split", "--params", str(params), "--raw", str(raw), "--out", str(tmp_path / "splits"))
    assert split.returncode == 0, split.stderr
    report = tmp_path / "metrics" / "data.json"
    args = ["--params", str(params), "--raw", str(raw), "--splits", str(tmp_path / "splits")]
    return _python(
        "stages.preprocess",
        *args,
        "--out",
        str(tmp_path / "cache"),
        "--metrics",
        str(Path(report).with_name("skipped.json")),
        "--report",
        str(report),
    ), report


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_two_bad_pairs_are_skipped_counted_and_the_run_goes_on(two_bad, tmp_path):
    raw, cut, wide = two_bad
    done, report_path = _stage_scripts(raw, tmp_path, max_bad_fraction=0.05)  # 2 of 42 = 4.8 %

    assert done.returncode == 0, done.stderr
    caches = {name: load_cache(tmp_path / "cache" / name) for name in SPLITS}
    cached = {name: caches[name].stems for name in SPLITS}
    assert sum(len(caches[name].images) for name in SPLITS) == 40
    assert sum(len(caches[name].native) for name in SPLITS) == 40
    everything = read_stems(raw / "annotations" / "list.txt")
    assert sorted(s for stems in cached.values() for s in stems) == sorted(set(everything) - {cut, wide})

    report = json.loads(report_path.read_text())
    assert report["total"] == {"listed": 42, "used": 40, "skipped": 2, "skipped_fraction": round(2 / 42, 6)}
    assert report["skipped_by_reason"] == {r: int(r in (UNDECODABLE_IMAGE, SIZE_MISMATCH)) for r in REASONS}
    assert report["skipped_stems"] == {UNDECODABLE_IMAGE: [cut], SIZE_MISMATCH: [wide]}
    listed = {name: len(read_stems(raw / "annotations" / f"{name}.txt")) for name in ("trainval", "test")}
    assert report["lists"] == {name: {"listed": n, "skipped": 0} for name, n in listed.items()}
    # Each split counts the bad pairs the split stage gave it; which of train/valid got `cut` is the seed's.
    for name in SPLITS:
        given = _lines(tmp_path / "splits" / f"{name}.txt")
        bad = [s for s in given if s in (cut, wide)]
        assert report["splits"][name] == {"used": len(given) - len(bad), "skipped": len(bad)}
        assert cached[name] == [s for s in given if s not in bad]
    assert report["splits"]["test"]["skipped"] == 1
    assert report["splits"]["train"]["skipped"] + report["splits"]["valid"]["skipped"] == 1
    # The details name the file and what is wrong with it.
    assert any(f"{cut}.jpg: cannot decode" in d for d in report["details"])
    assert any(f"{wide}.png: trimap is" in d for d in report["details"])
    assert f"2 of 42 listed pairs skipped (4.8 %): {UNDECODABLE_IMAGE} 1, {SIZE_MISMATCH} 1" in done.stdout


def test_more_bad_pairs_than_max_bad_fraction_fail_without_a_cache(two_bad, tmp_path):
    raw, cut, wide = two_bad
    failed, report_path = _stage_scripts(raw, tmp_path, max_bad_fraction=0.0)

    assert failed.returncode == 1
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert "2 of 42 pairs skipped (4.8 %) > data.max_bad_fraction 0.0" in errors[0]
    assert f"see {report_path} for the stems and reasons" in errors[0]
    assert not (tmp_path / "cache").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary folder
    # The report is there to read.
    assert json.loads(report_path.read_text())["skipped_stems"] == {UNDECODABLE_IMAGE: [cut], SIZE_MISMATCH: [wide]}


# --- one fault at a time, in process ------------------------------------------------------------


@pytest.fixture
def raw(tmp_path) -> Path:
    root = tmp_path / "raw"
    make_synthetic(root, 12, seed=1)
    return root


def _split(raw: Path, tmp_path: Path) -> Path:
    splits = tmp_path / "splits"
    params = data_params(tmp_path, image_size=32, max_bad_fraction=1.0)
    assert run_stage(stages.split.main, ["--params", str(params), "--raw", str(raw), "--out", str(splits)]) == 0
    return splits


def _preprocess(raw: Path, tmp_path: Path, max_bad_fraction: float = 1.0) -> tuple[int, dict]:
    params = data_params(tmp_path, image_size=32, max_bad_fraction=max_bad_fraction)
    report = tmp_path / "data.json"
    args = ["--params", str(params), "--raw", str(raw), "--splits", str(tmp_path / "splits")]
    code = run_stage(
        stages.preprocess.main,
        [
            *args,
            "--out",
            str(tmp_path / "cache"),
            "--metrics",
            str(Path(report).with_name("skipped.json")),
            "--report",
            str(report),
        ],
    )
    return code, json.loads(report.read_text()) if report.exists() else {}


def _stages(raw: Path, tmp_path: Path, max_bad_fraction: float = 1.0) -> tuple[int, dict]:
    _split(raw, tmp_path)
    return _preprocess(raw, tmp_path, max_bad_fraction)


def _cached(tmp_path: Path) -> list[str]:
    return [s for name in SPLITS for s in load_cache(tmp_path / "cache" / name).stems]


def _only(report: dict, reason: str, items: list[str]) -> None:
    """``report`` skipped exactly ``items``, all for ``reason``."""
    assert report["skipped_stems"] == {reason: items}
    assert report["skipped_by_reason"] == {r: len(items) if r == reason else 0 for r in REASONS}
    assert report["total"]["skipped"] == len(items)
    assert report["total"]["listed"] == report["total"]["used"] + report["total"]["skipped"]


def test_a_trimap_with_value_7_is_skipped_as_bad_trimap_values(raw, tmp_path):
    stem = read_stems(raw / "annotations" / "test.txt")[0]
    with Image.open(trimap_path(raw, stem)) as tri:
        values = np.asarray(tri).copy()
    values[0, 0] = 7
    Image.fromarray(values).save(trimap_path(raw, stem))

    code, report = _stages(raw, tmp_path)

    assert code == 0
    _only(report, BAD_TRIMAP_VALUES, [stem])
    assert any("[7]" in d and f"{stem}.png" in d for d in report["details"])
    assert stem not in _cached(tmp_path)


def test_an_undecodable_trimap_is_skipped(raw, tmp_path):
    stem = read_stems(raw / "annotations" / "trainval.txt")[1]
    trimap_path(raw, stem).write_bytes(b"\x89PNG not really")

    code, report = _stages(raw, tmp_path)

    assert code == 0
    _only(report, UNDECODABLE_TRIMAP, [stem])
    assert stem not in _cached(tmp_path)


def test_a_duplicate_stem_is_reported_once_and_used_once(raw, tmp_path):
    trainval = raw / "annotations" / "trainval.txt"
    lines = _lines(trainval)
    trainval.write_text("\n".join([*lines, lines[2]]) + "\n")
    stem = lines[2].split()[0]

    code, report = _stages(raw, tmp_path)

    assert code == 0
    _only(report, DUPLICATE, [stem])
    assert report["lists"]["trainval"] == {"listed": len(lines) + 1, "skipped": 1}
    assert _cached(tmp_path).count(stem) == 1
    assert report["total"]["used"] == len(read_stems(raw / "annotations" / "list.txt"))


def test_a_stem_in_both_lists_stays_in_trainval_only(raw, tmp_path):
    stem = read_stems(raw / "annotations" / "trainval.txt")[0]
    with open(raw / "annotations" / "test.txt", "a") as f:
        f.write(f"{stem} 1 1 1\n")

    code, report = _stages(raw, tmp_path)

    assert code == 0
    _only(report, DUPLICATE, [stem])
    assert report["lists"]["test"]["skipped"] == 1
    assert stem not in _lines(tmp_path / "splits" / "test.txt")
    assert stem in _lines(tmp_path / "splits" / "train.txt") + _lines(tmp_path / "splits" / "valid.txt")


def test_garbage_lines_are_counted_and_their_stems_not_used(raw, tmp_path):
    trainval = raw / "annotations" / "trainval.txt"
    lines = _lines(trainval)
    stem = lines[0].split()[0]
    # A real stem on a line without its integer ids, then a line that is no entry at all.
    lines[0] = f"{stem} 1 cat 1"
    trainval.write_text("\n".join(["#Image CLASS-ID SPECIES BREED ID", *lines, "", "not a pet line"]) + "\n")

    code, report = _stages(raw, tmp_path)

    assert code == 0
    _only(report, GARBAGE_LINE, ["trainval.txt:2", f"trainval.txt:{len(lines) + 3}"])
    assert report["lists"]["trainval"] == {"listed": len(lines) + 1, "skipped": 2}
    assert stem not in _cached(tmp_path)
    assert any("'not a pet line'" in d for d in report["details"])


def test_a_pair_deleted_after_the_split_is_a_missing_file(raw, tmp_path):
    splits = _split(raw, tmp_path)
    stem = _lines(splits / "valid.txt")[0]
    image_path(raw, stem).unlink()

    code, report = _preprocess(raw, tmp_path)

    assert code == 0
    _only(report, MISSING_FILE, [stem])
    assert report["splits"]["valid"]["skipped"] == 1 and report["lists"]["trainval"]["skipped"] == 0
    assert any(f"{stem}.jpg: file not found" in d for d in report["details"])


def test_a_pair_missing_before_the_split_is_a_missing_file_of_its_list(raw, tmp_path):
    stem = read_stems(raw / "annotations" / "test.txt")[2]
    trimap_path(raw, stem).unlink()

    code, report = _stages(raw, tmp_path)

    assert code == 0
    _only(report, MISSING_FILE, [stem])
    assert report["lists"]["test"]["skipped"] == 1 and report["splits"]["test"]["skipped"] == 0


def test_a_split_left_empty_fails_in_one_line_naming_the_report(raw, tmp_path, capsys):
    splits = _split(raw, tmp_path)
    for stem in _lines(splits / "valid.txt"):
        _truncate_image(raw, stem)
    capsys.readouterr()

    code, report = _preprocess(raw, tmp_path, max_bad_fraction=1.0)

    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(errors) == 1 and "Traceback" not in err
    assert "the valid split has no usable pair left" in errors[0] and str(tmp_path / "data.json") in errors[0]
    assert report["splits"]["valid"]["used"] == 0
    assert not (tmp_path / "cache").exists()


def test_build_cache_holds_the_good_pairs_only_in_their_order(raw):
    stems = read_stems(raw / "annotations" / "list.txt")
    bad = [stems[0], stems[4], stems[-1]]
    _truncate_image(raw, bad[0])
    _resize_trimap(raw, bad[1])
    trimap_path(raw, bad[2]).unlink()
    good = [s for s in stems if s not in bad]

    mixed = build_cache(raw, stems, 32, "ignore", progress=False)
    clean = build_cache(raw, good, 32, "ignore", progress=False)

    assert mixed.stems == good and mixed.breeds == clean.breeds and mixed.species == clean.species
    np.testing.assert_array_equal(mixed.images, clean.images)
    np.testing.assert_array_equal(mixed.masks, clean.masks)
    for packed in ("native", "native_ignore"):
        for part in ("bits", "offsets", "shapes"):
            np.testing.assert_array_equal(getattr(getattr(mixed, packed), part), getattr(getattr(clean, packed), part))
    assert [(s.item, s.reason) for s in mixed.skipped] == [
        (bad[0], UNDECODABLE_IMAGE),
        (bad[1], SIZE_MISMATCH),
        (bad[2], MISSING_FILE),
    ]
    assert clean.skipped == ()


def test_a_split_of_bad_pairs_only_is_an_empty_cache(raw, tmp_path):
    stem = read_stems(raw / "annotations" / "list.txt")[0]
    _truncate_image(raw, stem)
    cache = build_cache(raw, [stem], 32, "pet", progress=False)
    assert cache.images.shape == (0, 32, 32, 3) and cache.masks.shape == (0, 32, 32) and len(cache.native) == 0
    save_cache(tmp_path / "empty", cache)
    assert load_cache(tmp_path / "empty").stems == []
    # The stage writes it before it checks for empty splits.
    assert write_cache(raw, [stem], tmp_path / "written", 32, "pet", workers=2, progress=False) == (0, cache.skipped)
    written = load_cache(tmp_path / "written")
    assert written.stems == [] and written.images.shape == (0, 32, 32, 3) and len(written.native) == 0


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_write_cache_skips_bad_pairs_in_order_with_any_worker_count(raw, tmp_path, workers):
    stems = read_stems(raw / "annotations" / "list.txt")
    bad = [stems[0], stems[4], stems[-1]]
    _truncate_image(raw, bad[0])
    _resize_trimap(raw, bad[1])
    trimap_path(raw, bad[2]).unlink()

    used, skipped = write_cache(raw, stems, tmp_path / "c", 32, "ignore", workers=workers, progress=False)

    assert used == len(stems) - 3
    assert [(s.item, s.reason) for s in skipped] == [
        (bad[0], UNDECODABLE_IMAGE),
        (bad[1], SIZE_MISMATCH),
        (bad[2], MISSING_FILE),
    ]
    assert skipped == build_cache(raw, stems, 32, "ignore", progress=False).skipped  # the same details too
    assert load_cache(tmp_path / "c").stems == [s for s in stems if s not in bad]


# --- the report's arithmetic --------------------------------------------------------------------


def _report(skipped: int, listed: int, used_per_split: int = 1) -> dict:
    bad = [Skipped(f"s{i}", UNDECODABLE_IMAGE, "x") for i in range(skipped)]
    return build_report(
        {"trainval": listed, "test": 0},
        {"trainval": [], "test": []},
        dict.fromkeys(SPLITS, used_per_split),
        {"train": bad, "valid": [], "test": []},
    )


def test_max_bad_fraction_is_a_share_not_exceeded_at_equality():
    check_report(_report(29, 100), 0.29, Path("r.json"))  # exactly the limit: passes
    with pytest.raises(UserError, match=r"30 of 100 pairs skipped \(30.0 %\) > data.max_bad_fraction 0.29"):
        check_report(_report(30, 100), 0.29, Path("r.json"))
    check_report(_report(0, 100), 0.0, Path("r.json"))
    # The check uses the counts, not the report's rounded skipped_fraction (0.333333 here).
    assert _report(1, 3)["total"]["skipped_fraction"] < 0.3333333
    with pytest.raises(UserError, match="1 of 3 pairs skipped"):
        check_report(_report(1, 3), 0.3333333, Path("r.json"))


def test_a_summary_listing_nothing_gives_fraction_0_instead_of_dividing_by_zero():
    assert _report(0, 0, used_per_split=0)["total"] == {"listed": 0, "used": 0, "skipped": 0, "skipped_fraction": 0.0}


def test_split_summary_of_an_older_split_stage_is_one_line(tmp_path):
    old = tmp_path / "summary.json"
    old.write_text(json.dumps({"train": 1, "valid": 1, "test": 1, "skipped_missing_files": {"trainval": 0, "test": 0}}))
    with pytest.raises(UserError, match=r"summary.json: not a petseg split summary .*dvc repro -f split"):
        read_split_summary(old)
    with pytest.raises(UserError, match=r"nothing.json: not found; run `dvc repro split`"):
        read_split_summary(tmp_path / "nothing.json")


# --- the split stage writes all or nothing ------------------------------------------------------


def test_split_stage_replaces_its_folder_whole(raw, tmp_path):
    splits = tmp_path / "splits"
    splits.mkdir()
    (splits / "stale.txt").write_text("from an older run\n")
    _split(raw, tmp_path)
    assert sorted(p.name for p in splits.iterdir()) == ["summary.json", "test.txt", "train.txt", "valid.txt"]


def test_split_stage_failing_midway_leaves_the_old_folder(raw, tmp_path, monkeypatch):
    splits = _split(raw, tmp_path)
    before = {p.name: p.read_bytes() for p in splits.iterdir()}
    for name in SPLITS:  # lists that differ from the old ones, if they got written
        trimap_path(raw, _lines(splits / f"{name}.txt")[0]).unlink()

    def fail(*_):
        raise OSError("disk full")

    monkeypatch.setattr(stages.split, "write_json", fail)
    with pytest.raises(OSError, match="disk full"):
        stages.split.main(["--params", str(tmp_path / "params.yaml"), "--raw", str(raw), "--out", str(splits)])

    assert {p.name: p.read_bytes() for p in splits.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
