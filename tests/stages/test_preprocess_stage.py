"""The split and preprocess stages, in process: their output folders and report, and one-line errors for bad
params or a missing list file, written before any output."""

import json
from pathlib import Path

import numpy as np

import stages.preprocess
import stages.split
from pipeline.core.runner import run_stage
from pipeline.data.cache import load_cache
from pipeline.data.masks import IGNORE
from pipeline.data.split import make_split
from tests.support import data_params, preprocess_reports


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_split_and_preprocess_stages_write_their_outputs(synthetic_root, tmp_path, capsys):
    params = data_params(tmp_path)
    splits, cache = tmp_path / "splits", tmp_path / "cache"

    code = run_stage(stages.split.main, ["--params", str(params), "--raw", str(synthetic_root), "--out", str(splits)])
    assert code == 0
    expected = make_split(synthetic_root, 0.25, seed=0)
    assert sorted(p.name for p in splits.iterdir()) == ["summary.json", "test.txt", "train.txt", "valid.txt"]
    assert _lines(splits / "train.txt") == expected.train
    assert _lines(splits / "valid.txt") == expected.valid
    assert _lines(splits / "test.txt") == expected.test
    summary = json.loads((splits / "summary.json").read_text())
    assert summary["train"] == len(expected.train)
    assert summary["valid"] == len(expected.valid)
    assert summary["test"] == len(expected.test)
    assert summary["listed"] == {"trainval": 8, "test": 8} and summary["skipped"] == {"trainval": [], "test": []}

    report = tmp_path / "metrics" / "data.json"
    argv = ["--params", str(params), "--raw", str(synthetic_root), "--splits", str(splits), "--out", str(cache)]
    code = run_stage(
        stages.preprocess.main,
        [*argv, *preprocess_reports(report)],
    )
    assert code == 0
    assert sorted(p.name for p in cache.iterdir()) == ["test", "train", "valid"]
    data = json.loads(report.read_text())
    assert data["total"] == {"listed": 16, "used": 16, "skipped": 0, "skipped_fraction": 0.0}
    assert set(data["skipped_by_reason"].values()) == {0} and data["skipped_stems"] == {}
    assert data["splits"] == {name: {"used": summary[name], "skipped": 0} for name in ("train", "valid", "test")}
    for name in ("train", "valid", "test"):
        stems = _lines(splits / f"{name}.txt")
        loaded = load_cache(cache / name)
        assert loaded.stems == stems
        assert loaded.images.shape == (len(stems), 64, 64, 3)
        assert loaded.masks.shape == (len(stems), 64, 64)
        assert set(np.unique(loaded.masks).tolist()) == {0, 1}
        assert loaded.native_ignore is None


def test_preprocess_stage_with_boundary_ignore(synthetic_root, tmp_path):
    splits, cache = tmp_path / "splits", tmp_path / "cache"
    params = data_params(tmp_path, boundary="ignore")
    assert (
        run_stage(stages.split.main, ["--params", str(params), "--raw", str(synthetic_root), "--out", str(splits)]) == 0
    )
    argv = ["--params", str(params), "--raw", str(synthetic_root), "--splits", str(splits), "--out", str(cache)]
    assert (
        run_stage(
            stages.preprocess.main,
            [
                *argv,
                "--metrics",
                str(Path(tmp_path / "data.json").with_name("skipped.json")),
                "--report",
                str(tmp_path / "data.json"),
            ],
        )
        == 0
    )
    loaded = load_cache(cache / "test")
    assert set(np.unique(loaded.masks).tolist()) == {0, 1, IGNORE}
    assert loaded.native_ignore is not None and len(loaded.native_ignore) == len(loaded.stems)


def test_preprocess_stage_rejects_image_size_not_multiple_of_32(synthetic_root, tmp_path, capsys):
    splits, cache = tmp_path / "splits", tmp_path / "cache"
    assert (
        run_stage(
            stages.split.main,
            ["--params", str(data_params(tmp_path)), "--raw", str(synthetic_root), "--out", str(splits)],
        )
        == 0
    )
    capsys.readouterr()

    params = data_params(tmp_path, image_size=100)
    argv = ["--params", str(params), "--raw", str(synthetic_root), "--splits", str(splits), "--out", str(cache)]
    code = run_stage(
        stages.preprocess.main,
        [
            *argv,
            "--metrics",
            str(Path(tmp_path / "data.json").with_name("skipped.json")),
            "--report",
            str(tmp_path / "data.json"),
        ],
    )

    err = capsys.readouterr().err
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ")
    assert "image_size" in err and "100" in err
    assert "Traceback" not in err
    assert not cache.exists()
    assert not (tmp_path / "data.json").exists()  # params are checked before any work


def test_split_stage_rejects_bad_valid_fraction(synthetic_root, tmp_path, capsys):
    splits = tmp_path / "splits"
    params = data_params(tmp_path, valid_fraction=1.5)
    code = run_stage(stages.split.main, ["--params", str(params), "--raw", str(synthetic_root), "--out", str(splits)])
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.splitlines()) == 1
    assert err.startswith("error: ") and "valid_fraction" in err
    assert not splits.exists()


def test_split_stage_reports_missing_list_file(tmp_path, capsys):
    raw = tmp_path / "raw"
    (raw / "annotations").mkdir(parents=True)
    splits = tmp_path / "splits"
    code = run_stage(
        stages.split.main, ["--params", str(data_params(tmp_path)), "--raw", str(raw), "--out", str(splits)]
    )
    err = capsys.readouterr().err
    assert code == 1
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "trainval.txt" in err
    assert not splits.exists()
