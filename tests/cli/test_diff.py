"""`petseg diff`: metrics old → new read through git, and a paired bootstrap whose answer is known."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.cli.main import main
from pipeline.cli.options import SEEDS_FILE
from pipeline.core.errors import UserError
from pipeline.evaluate.compare import (
    BETTER,
    WITHIN_NOISE,
    WORSE,
    DiceChange,
    class_changes,
    paired_bootstrap,
    verdict,
)
from tests.support import REPO

IMAGES = 60


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def per_image(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> pd.DataFrame:
    """A per-image table as the evaluate stage writes it (the columns `petseg diff` reads)."""
    dice = np.where(2 * tp + fp + fn > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 1.0)
    return pd.DataFrame({"stem": [f"pet_{i}" for i in range(len(tp))], "dice": dice, "tp": tp, "fp": fp, "fn": fn})


def counts(seed: int, quality: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-image TP/FP/FN of IMAGES pets of 900-1100 pixels, a share ``quality`` of each found."""
    rng = np.random.default_rng(seed)
    pet = rng.integers(900, 1100, IMAGES)
    tp = (pet * quality).astype(np.int64)
    return tp, rng.integers(0, 2 * (pet - tp) + 1), pet - tp


def write(repo: Path, model: str, table: pd.DataFrame) -> None:
    """The model's scores and per-image CSV of ``table`` in repo/metrics/evaluation/<model>/ (dvc.yaml's paths)."""
    dice = 2 * table.tp.sum() / (2 * table.tp.sum() + table.fp.sum() + table.fn.sum()) if "tp" in table else 0.5
    metrics = {"dice": dice, "iou": dice / (2 - dice), "dice_per_image": table.dice.mean(), "best_epoch": 3}
    folder = repo / "metrics" / "evaluation" / model
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "scores.json").write_text(json.dumps(metrics))
    table.to_csv(folder / "per_image.csv", index=False)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git + DVC repository with the project's dvc.yaml and hand-made evaluate outputs committed:
    unet and resnet34_unet each found 80 % of every pet."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(REPO / "dvc.yaml", repo / "dvc.yaml")
    _git(repo, "init", "-q")
    _git(repo, "config", "user.email", "ci@petseg.invalid")
    _git(repo, "config", "user.name", "petseg CI")
    subprocess.run([Path(sys.executable).parent / "dvc", "init", "-q"], cwd=repo, check=True)
    for model in ("unet", "resnet34_unet"):
        write(repo, model, per_image(*counts(0, 0.8)))
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "baseline")
    return repo


def run(repo: Path, capsys, *args: str) -> tuple[int, str, str]:
    cwd = Path.cwd()
    os.chdir(repo)
    try:
        code = main(["diff", *args])
    finally:
        os.chdir(cwd)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_clear_gain_and_a_change_inside_the_noise(repo, capsys):
    # unet: every pet found at 95 % instead of 80 %; resnet34_unet: a third of the pets up, a third down.
    write(repo, "unet", per_image(*counts(0, 0.95)))
    tp, fp, fn = counts(0, 0.8)
    shift = np.resize([30, -30, 0], IMAGES)
    write(repo, "resnet34_unet", per_image(tp + shift, fp, fn - shift))
    code, out, err = run(repo, capsys)
    assert code == 0 and err == ""
    verdicts = {
        line.split(":")[0]: line.split(":")[1].split("(")[0].strip()
        for line in out.splitlines()[2:]
        if ": " in line and not line.startswith(" ")
    }
    assert verdicts == {"unet": BETTER, "resnet34_unet": WITHIN_NOISE}
    assert f"over {IMAGES} test images: 20 better, 20 worse" in out  # the shift moved 20 up, 20 down
    assert f"over {IMAGES} test images: {IMAGES} better, 0 worse" in out
    assert "best_epoch" in out and "+0" in out  # an integer metric's change is an integer


def test_a_clear_loss_is_worse_and_markdown_links_the_figures(repo, capsys):
    write(repo, "unet", per_image(*counts(0, 0.6)))
    code, out, _ = run(repo, capsys, "HEAD", "--md")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("| **unet**")]
    assert rows and f"**{WORSE}**" in rows[0] and "| dice |" in rows[0]
    assert "[worst images](plots/worst.png)" in out and "[learning curves](plots/learning_curves.png)" in out


def test_bootstrap_interval_matches_its_definition_on_known_counts():
    # Identical tables: every resample's difference is 0, so the interval is exactly [0, 0].
    table = per_image(*counts(1, 0.7))
    same = paired_bootstrap(table, table, 200, 0, 0.95)
    assert (same.low, same.high, same.better, same.worse, same.verdict) == (0.0, 0.0, 0, 0, WITHIN_NOISE)
    # Every image better by the same counts: every resample's difference is positive.
    tp, fp, fn = counts(1, 0.7)
    gain = paired_bootstrap(table, per_image(tp + 50, fp, fn - 50), 200, 0, 0.95)
    assert gain.low > 0 and gain.verdict == BETTER and gain.change == pytest.approx(gain.new - gain.old)
    assert gain.low <= gain.change <= gain.high


def test_other_test_images_or_an_old_table_are_one_line_errors(repo, capsys):
    table = per_image(*counts(0, 0.9)).iloc[:-1]  # one test image fewer
    write(repo, "unet", table)
    code, _, err = run(repo, capsys)
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "different test images" in err
    write(repo, "unet", per_image(*counts(0, 0.9)).drop(columns=["tp"]))
    code, _, err = run(repo, capsys)
    assert code == 1 and "lacks tp" in err and err.count("\n") == 1


def test_an_unknown_revision_or_uncommitted_metrics_are_one_line_errors(repo, capsys):
    code, _, err = run(repo, capsys, "no-such-branch")
    assert code == 1 and err == "error: no-such-branch: not a git revision here; give a branch, tag or commit\n"
    _git(repo, "rm", "-rq", "--cached", "metrics")
    _git(repo, "commit", "-qm", "metrics untracked")
    code, _, err = run(repo, capsys)
    assert code == 1 and err.count("\n") == 1
    assert "HEAD:metrics/evaluation/unet/scores.json: not in that revision" in err


def _class_table(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray, names=("background", "pet", "boundary")):
    """A multi-class per-image table: counts (N, C) per class, with each image's own mIoU."""
    union = tp + fp + fn
    miou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
    table = pd.DataFrame({"stem": [f"img{i}" for i in range(len(tp))], "miou": np.nanmean(miou, 1)})
    for c, name in enumerate(names):
        table[f"tp_{name}"], table[f"fp_{name}"], table[f"fn_{name}"] = tp[:, c], fp[:, c], fn[:, c]
    return table


def test_a_multi_class_bootstrap_compares_the_miou_of_the_summed_per_class_counts():
    rng = np.random.default_rng(0)
    tp, fp, fn = (rng.integers(10, 200, (40, 3)) for _ in range(3))
    fp[:, 2] = fn[:, 2] = tp[:, 2] = 0  # a class in no truth and no prediction: left out of the mean
    old = _class_table(tp, fp, fn)
    better = _class_table(tp + 40, fp, np.maximum(fn - 40, 0))
    change = paired_bootstrap(old, better, 500, 0, 0.95)
    summed = [tp.sum(0)[:2], fp.sum(0)[:2], fn.sum(0)[:2]]
    assert change.metric == "miou" and change.old == pytest.approx(np.mean(summed[0] / sum(summed)), abs=1e-12)
    assert change.verdict == BETTER and change.better == 40 and change.worse == 0
    same = paired_bootstrap(old, old, 200, 0, 0.95)
    assert (same.low, same.high, same.verdict) == (0.0, 0.0, WITHIN_NOISE)
    with pytest.raises(UserError, match="different tasks or classes"):
        paired_bootstrap(old, per_image(*counts(1, 0.7)), 10, 0, 0.95)


def _change(old: float, new: float, low: float, high: float) -> DiceChange:
    return DiceChange("dice", old, new, low, high, 0.95, better=0, worse=0, images=IMAGES)


def test_a_change_must_exceed_the_seed_range_as_well_as_the_interval():
    # Changes of exactly 1/16 (binary fractions, so the comparison with a range of 1/16 is exact).
    gain, loss = _change(0.5, 0.5625, 0.01, 0.1), _change(0.5, 0.4375, -0.1, -0.01)
    assert [verdict(gain), verdict(gain, 0.03125), verdict(gain, 0.0625), verdict(gain, 0.125)] == [
        BETTER,
        BETTER,
        WITHIN_NOISE,  # no larger than seeds alone made
        WITHIN_NOISE,
    ]
    assert [verdict(loss, 0.03125), verdict(loss, 0.0625)] == [WORSE, WITHIN_NOISE]
    # An interval holding 0 stays within noise, however small the seed range.
    assert verdict(_change(0.5, 0.5625, -0.01, 0.1), 0.0) == WITHIN_NOISE


def _seeds_file(repo: Path, low: float, high: float, metric: str = "dice") -> None:
    """The file `petseg seeds --save` writes: unet's score over three seeds spans low..high."""
    values = [low, (low + high) / 2, high]
    spread = {"seeds": [0, 1, 2], "values": values, "mean": float(np.mean(values))}
    spread |= {"sd": float(np.std(values, ddof=1)), "min": low, "max": high}
    models = {"unet": {metric: spread}}
    (repo / SEEDS_FILE).write_text(json.dumps({"settings": [{"params": {"lr": "0.001"}, "models": models}]}))


def test_with_a_seeds_file_a_gain_within_the_seed_range_is_noise(repo, capsys):
    write(repo, "unet", per_image(*counts(0, 0.95)))  # a gain of 0.15 Dice, its interval well above 0
    _seeds_file(repo, 0.70, 0.90)  # seeds alone moved unet by 0.20
    code, out, _ = run(repo, capsys)
    assert code == 0 and f"seed ranges from {SEEDS_FILE}" in out.splitlines()[0]
    assert f"unet: {WITHIN_NOISE} (Dice +0.1517" in out
    assert "over 3 seeds 0.7000-0.9000 (range 0.2000, sd 0.1000)" in out
    assert "resnet34_unet: within noise (Dice +0.0000" in out and out.count("over 3 seeds") == 1  # none saved for it
    _seeds_file(repo, 0.78, 0.80)
    code, out, _ = run(repo, capsys, "--md")
    assert f"| **unet** | **{BETTER}** |" in out and "range 0.0200" in out
    _seeds_file(repo, 0.70, 0.90, metric="miou")  # a spread of another task's score does not apply
    code, out, _ = run(repo, capsys)
    assert f"unet: {BETTER}" in out and "seed ranges" not in out


def test_each_class_s_iou_gets_its_own_interval_from_the_same_resamples():
    rng = np.random.default_rng(1)
    tp, fp, fn = (rng.integers(10, 200, (40, 3)) for _ in range(3))
    old = _class_table(tp, fp, fn)
    moved = tp.copy()
    moved[:, 2] += 30  # only the boundary class gets better, by 30 pixels in every image
    new = _class_table(moved, fp, fn)
    changes = class_changes(old, new, 500, 0, 0.95)
    assert [c.metric for c in changes] == ["iou_background", "iou_pet", "iou_boundary"]
    for c, change in enumerate(changes):
        assert change.old == pytest.approx(tp[:, c].sum() / (tp[:, c] + fp[:, c] + fn[:, c]).sum(), abs=1e-12)
        assert change.new == pytest.approx(moved[:, c].sum() / (moved[:, c] + fp[:, c] + fn[:, c]).sum(), abs=1e-12)
    assert [c.verdict for c in changes] == [WITHIN_NOISE, WITHIN_NOISE, BETTER]
    assert (changes[0].low, changes[0].high) == (0.0, 0.0) and (changes[2].better, changes[2].worse) == (40, 0)
    assert class_changes(per_image(*counts(1, 0.7)), per_image(*counts(1, 0.8)), 10, 0, 0.95) == []


def test_a_multi_class_diff_judges_each_class_by_its_interval_and_its_seed_range(repo, capsys):
    rng = np.random.default_rng(2)
    tp, fp, fn = (rng.integers(100, 200, (IMAGES, 3)) for _ in range(3))
    moved = tp.copy()
    moved[:, 2] += 60
    for model in ("unet", "resnet34_unet"):
        write_classes(repo, model, _class_table(tp, fp, fn))
    _git(repo, "commit", "-qam", "trimap baseline")
    write_classes(repo, "unet", _class_table(moved, fp, fn))
    code, out, _ = run(repo, capsys)
    unet = out.split("\n\n")[1].splitlines()
    assert code == 0 and unet[0].startswith("unet: better (mIoU +")
    assert unet[1].startswith("  IoU background: within noise (IoU background +0.0000")
    assert unet[3].startswith("  IoU boundary: better (IoU boundary +")
    boundary = float(unet[3].split("+")[1].split(",")[0])
    _seeds_file(repo, 0.40, 0.40 + 2 * boundary, metric="iou_boundary")  # seeds alone moved it twice as far
    code, out, _ = run(repo, capsys, "--md")
    assert f"| | {WITHIN_NOISE} | IoU boundary |" in out and f"| | {WITHIN_NOISE} | IoU pet |" in out
    assert f"  - IoU boundary +{boundary:.4f}" in out and f"(range {2 * boundary:.4f}" in out


def write_classes(repo: Path, model: str, table: pd.DataFrame) -> None:
    """A multi-class evaluation of ``table`` (:func:`_class_table`) in repo/metrics/evaluation/<model>/."""
    folder = repo / "metrics" / "evaluation" / model
    (folder / "scores.json").write_text(json.dumps({"miou": table.miou.mean(), "best_epoch": 3}))
    table.to_csv(folder / "per_image.csv", index=False)
