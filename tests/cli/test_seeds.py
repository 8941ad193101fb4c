"""`petseg seeds` on the table the real `dvc exp show --csv` prints (a tiny DVC repository whose one stage scores
from params), the file it saves for `petseg diff`, and the queue helper and target of `make seeds`."""

import io
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.cli import queue
from pipeline.cli.main import main
from pipeline.cli.options import SEEDS_FILE
from pipeline.cli.seeds import render_text, save, settings, widest_spreads
from pipeline.core.errors import UserError
from tests.support import REPO, dvc_env, run

# In place of the pipeline, a stage that writes what the plot stage declares (metrics/test.json, {score: {model:
# value}}) from params alone: a Dice per model drawn from the seed and the setting, each also logged beside the
# repository so that the tests compute the statistics from what was written, not from the table.
SCORE = """\
import json, random, yaml
p = yaml.safe_load(open("params.yaml"))
augment = p.get("resnet34_unet", {}).get("augment", "none")
rng = random.Random(f"{p['seed']} {augment}")
dice = {m: rng.uniform(0.7, 0.9) for m in ("unet", "resnet34_unet")}
json.dump({"dice": dice, "iou": {m: d / (2 - d) for m, d in dice.items()}}, open("metrics/test.json", "w"))
with open("../written.jsonl", "a") as log:
    log.write(json.dumps({"seed": p["seed"], "augment": augment, **dice}) + "\\n")
"""
DVC_YAML = """\
stages:
  score:
    cmd: python score.py
    deps: [score.py]
    params:
      - params.yaml:
    outs:
      - metrics/test.json:
          cache: false
metrics:
  - metrics/test.json
"""
# Two settings of two seeds each: the params.yaml keys as they are, and with a model section's key that
# params.yaml lacks (hydra's `+`).
EXPERIMENTS = (
    ("seed=1",),
    ("seed=2",),
    ("seed=1", "+resnet34_unet.augment=full"),
    ("seed=2", "+resnet34_unet.augment=full"),
)


@pytest.fixture(scope="module")
def experiments(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The tiny repository after its four `dvc exp run`s, and what its stage wrote, in order."""
    repo = tmp_path_factory.mktemp("seeds") / "repo"
    (repo / "metrics").mkdir(parents=True)
    (repo / "params.yaml").write_text("seed: 0\nlr: 0.001\n")
    (repo / "score.py").write_text(SCORE)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "ci@petseg.invalid")  # this repository only
    run(repo, "git", "config", "user.name", "petseg CI")
    run(repo, "dvc", "init", "-q")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline")
    for overrides in EXPERIMENTS:
        run(repo, "git", "checkout", "-q", "params.yaml")  # `+key` fails where the last run left the key
        run(repo, "dvc", "exp", "run", "-q", *(arg for o in overrides for arg in ("-S", o)))
    written = [json.loads(line) for line in (repo.parent / "written.jsonl").read_text().splitlines()]
    return repo, written


def petseg(cwd: Path, capsys, *args: str) -> tuple[int, str, str]:
    here = Path.cwd()
    os.chdir(cwd)
    try:
        code = main(list(args))
    finally:
        os.chdir(here)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.e2e
def test_each_setting_gets_the_mean_and_sd_of_the_scores_its_runs_wrote(experiments, capsys, monkeypatch, tmp_path):
    repo, written = experiments
    monkeypatch.setenv("PATH", dvc_env()["PATH"])  # `petseg seeds` runs `dvc exp show --csv` itself
    saved = tmp_path / "seeds.json"
    code, out, err = petseg(repo, capsys, "seeds", "--save", str(saved))
    assert code == 0 and err == "", err
    blocks = out.split("\n\n")
    assert blocks[0].startswith("petseg seeds: test scores over seeds, 4 runs in 2 settings")
    # Only the param that differs names a setting; the baseline commit (seed 0, no scores) is not a run.
    titles = [block.splitlines()[0] for block in blocks[1:]]
    assert titles == ["setting 1 of 2: resnet34_unet.augment=full", "setting 2 of 2: resnet34_unet.augment=unset"]
    by_augment = {"full": blocks[1], "unset": blocks[2]}
    for augment, block in by_augment.items():
        runs = [w for w in written if w["augment"] == ("none" if augment == "unset" else augment)]
        for model in ("unet", "resnet34_unet"):
            values = [r[model] for r in runs]
            mean, sd = statistics.mean(values), statistics.stdev(values)
            row = next(line.split() for line in block.splitlines() if line.split()[0] == model)
            assert row[1:] == [
                "Dice",
                "2",
                *(f"{v:.4f}" for v in (mean, sd, min(values), max(values), max(values) - min(values))),
                "1,2",
            ]
    settings_saved = json.loads(saved.read_text())["settings"]
    full = next(s for s in settings_saved if s["params"].get("resnet34_unet.augment") == "full")
    runs = [w for w in written if w["augment"] == "full"]
    assert list(full["models"]["unet"]) == ["dice"]
    unet = full["models"]["unet"]["dice"]
    assert unet["seeds"] == [1, 2] and full["params"]["lr"] == "0.001"
    assert unet["mean"] == pytest.approx(statistics.mean(r["unet"] for r in runs), abs=1e-12)
    assert unet["sd"] == pytest.approx(statistics.stdev(r["unet"] for r in runs), abs=1e-12)


@pytest.mark.e2e
def test_a_csv_file_or_stdin_reads_the_same(experiments, capsys, monkeypatch, tmp_path):
    repo, _ = experiments
    shown = run(repo, "dvc", "exp", "show", "--csv")
    (tmp_path / "exps.csv").write_text(shown)
    _, from_file, _ = petseg(repo, capsys, "seeds", str(tmp_path / "exps.csv"))
    monkeypatch.setattr(sys, "stdin", io.StringIO(shown))
    _, from_stdin, _ = petseg(repo, capsys, "seeds", "-")
    assert from_file.split("\n", 1)[1] == from_stdin.split("\n", 1)[1] and "setting 2 of 2" in from_file


# `dvc exp show --csv` of the repository above after one more `dvc exp run -S seed=1`, which DVC ran again with
# the same scores (tipsy-eild = aloof-boff): columns, the workspace row, the commit (no scores: "!"), experiments.
SHOWN = """\
Experiment,rev,typ,Created,parent,dice.unet,dice.resnet34_unet,iou.unet,iou.resnet34_unet,seed,lr,resnet34_unet.augment,score.py
,workspace,baseline,,,0.7269904972321259,0.8595049717133831,0.5710801809817192,0.7536244791918388,1,0.001,,5231f812
,master,baseline,2026-12-07T21:47:35,,!,!,!,!,0,0.001,,
tipsy-eild,161563d,branch_commit,2026-12-07T21:47:51,,0.7269904972321259,0.8595049717133831,0.57,0.75,1,0.001,,5231f812
gamer-ball,2728826,branch_commit,2026-12-07T21:47:40,,0.7069384580285114,0.7495357752672929,0.54,0.59,2,0.001,full,5231f812
pedal-sida,a02feb3,branch_commit,2026-12-07T21:47:39,,0.8604673590464309,0.771669956987728,0.75,0.62,1,0.001,full,5231f812
webby-dent,2c0394f,branch_commit,2026-12-07T21:47:37,,0.8977179522174581,0.889868680203492,0.81,0.80,2,0.001,,5231f812
aloof-boff,397ed61,branch_base,2026-12-07T21:47:36,,0.7269904972321259,0.8595049717133831,0.57,0.75,1,0.001,,5231f812
"""


def _edited(change) -> str:
    table = pd.read_csv(io.StringIO(SHOWN), dtype=str, keep_default_na=False)
    return change(table).to_csv(index=False)


def _add_lone_run(table: pd.DataFrame) -> pd.DataFrame:
    """``table`` and one more experiment, of lr 0.01."""
    lone = {"Experiment": "lone", "typ": "branch_commit", "dice.unet": "0.5", "dice.resnet34_unet": "0.5", "lr": "0.01"}
    return pd.concat([table, pd.DataFrame([{**table.iloc[3].to_dict(), **lone}])])


def test_a_run_counts_once_and_a_one_run_setting_is_left_out():
    found = settings(_edited(_add_lone_run), "exps.csv")
    assert [(s.params["resnet34_unet.augment"], s.params["lr"], s.runs) for s in found] == [
        ("", "0.001", 2),
        ("full", "0.001", 2),
        ("full", "0.01", 1),
    ]
    assert found[0].spreads[0].seeds == [1, 2] and found[0].spreads[0].values == [
        0.7269904972321259,
        0.8977179522174581,
    ]
    report = render_text(found, "exps.csv")
    assert "lr=0.01" not in report and "left out: 1 setting of one run" in report
    assert "setting 1 of 2: resnet34_unet.augment=unset" in report  # lr is the same in both shown


def test_a_multi_class_setting_is_scored_by_its_miou():
    def trimap_runs(table: pd.DataFrame) -> pd.DataFrame:
        table["task"] = ["binary", "binary", "binary", "trimap", "trimap", "binary", "binary"]
        for model in ("unet", "resnet34_unet"):
            table[f"miou.{model}"] = ["", "", "", "0.61", "0.65", "", ""]
        return table

    found = settings(_edited(trimap_runs), "exps.csv")
    metrics = {s.params["task"]: {sp.model: (sp.metric, sp.mean) for sp in s.spreads} for s in found}
    assert metrics["trimap"]["unet"] == ("miou", pytest.approx(0.63))
    assert metrics["binary"]["unet"][0] == "dice"
    assert "unet           mIoU" in render_text(found, "exps.csv")


def test_a_multi_class_summary_s_class_ious_get_a_spread_each(tmp_path):
    def trimap_runs(table: pd.DataFrame) -> pd.DataFrame:
        table["task"] = ["binary", "binary", "binary", "trimap", "trimap", "binary", "binary"]
        for model in ("unet", "resnet34_unet"):
            table[f"miou.{model}"] = ["", "", "", "0.61", "0.65", "", ""]
            table[f"iou_boundary.{model}"] = ["", "", "", "0.40", "0.43", "", ""]
        return table

    found = settings(_edited(trimap_runs), "exps.csv")
    trimap = next(s for s in found if s.params["task"] == "trimap")
    boundary = {(sp.model, sp.metric): sp for sp in trimap.spreads}[("unet", "iou_boundary")]
    # gamer-ball (seed 2) wrote 0.40 and pedal-sida (seed 1) 0.43: listed by seed.
    assert boundary.seeds == [1, 2] and boundary.values == [0.43, 0.40] and boundary.range == pytest.approx(0.03)
    assert [(sp.model, sp.metric) for sp in trimap.spreads][:2] == [("unet", "miou"), ("unet", "iou_boundary")]
    assert "unet           IoU boundary       2  0.4150" in render_text(found, "exps.csv")
    save(tmp_path / "s.json", found)
    widest = widest_spreads(tmp_path / "s.json")
    assert widest["unet", "iou_boundary"].values == [0.43, 0.40] and widest["unet", "miou"].mean == pytest.approx(0.63)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "exps.csv: not a CSV"),
        ("a,b\n1,2\n", "not a `dvc exp show --csv` table"),
        (SHOWN.replace("dice.", "recall."), "no score column"),
        (SHOWN.replace(",seed,", ",epochs,"), "no seed param column"),
        ("\n".join(SHOWN.splitlines()[:3]), "no experiment with every model's test score"),
    ],
)
def test_a_table_without_what_it_needs_is_a_one_line_error(text, message):
    with pytest.raises(UserError, match=message) as raised:
        settings(text, "exps.csv")
    assert "\n" not in str(raised.value)


def test_only_one_run_per_setting_or_no_csv_or_no_dvc_are_one_line_errors(capsys, tmp_path, monkeypatch):
    single = "\n".join(SHOWN.splitlines()[:5])  # one experiment of each setting
    (tmp_path / "one.csv").write_text(single)
    code, out, err = petseg(tmp_path, capsys, "seeds", "one.csv", "--save")
    assert (code, out) == (1, "") and "no setting has two runs (2 settings of one run each)" in err
    assert not (tmp_path / SEEDS_FILE).exists()
    code, _, err = petseg(tmp_path, capsys, "seeds", "missing.csv")
    assert (
        code == 1
        and err == "error: missing.csv: no such file; give what `dvc exp show --csv` printed, or no CSV to run it\n"
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    code, _, err = petseg(tmp_path, capsys, "seeds")
    assert code == 1 and err.startswith("error: dvc: not found on PATH") and err.count("\n") == 1


def test_a_failing_dvc_is_a_one_line_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", dvc_env()["PATH"])
    code, _, err = petseg(tmp_path, capsys, "seeds")  # not a DVC repository
    assert code == 1 and err.startswith("error: dvc exp show --csv: ERROR:") and err.count("\n") == 1


def test_the_saved_file_gives_diff_each_model_s_widest_spread(tmp_path, capsys):
    (tmp_path / "exps.csv").write_text(SHOWN)
    code, out, _ = petseg(tmp_path, capsys, "seeds", "exps.csv", "--save")
    assert code == 0 and out.endswith(f"wrote {SEEDS_FILE}\n")
    widest = widest_spreads(tmp_path / SEEDS_FILE)
    # unet: 0.7270-0.8977 without augment, 0.7069-0.8605 with it.
    assert set(widest) == {("unet", "dice"), ("resnet34_unet", "dice")}
    assert widest["unet", "dice"].range == pytest.approx(0.8977179522174581 - 0.7269904972321259)
    assert widest["resnet34_unet", "dice"].range == pytest.approx(0.889868680203492 - 0.8595049717133831)
    assert widest_spreads(tmp_path / "absent.json") == {}
    (tmp_path / "bad.json").write_text('{"settings": [{"models": {"unet": {"dice": {"seeds": [0]}}}}]}')
    with pytest.raises(UserError, match="bad.json: not what `petseg seeds --save` writes"):
        widest_spreads(tmp_path / "bad.json")


def test_save_writes_only_settings_of_two_runs(tmp_path):
    save(tmp_path / "s.json", settings(_edited(_add_lone_run), "exps.csv"))
    saved = json.loads((tmp_path / "s.json").read_text())
    # Not lr 0.01's one run; an unset param is left out.
    assert [s["params"] for s in saved["settings"]] == [
        {"lr": "0.001"},
        {"lr": "0.001", "resnet34_unet.augment": "full"},
    ]
    assert set(saved["settings"][0]["models"]["unet"]["dice"]) == {"seeds", "values", "mean", "sd", "min", "max"}


# --- the queue helper and target of `make seeds` -----------------------------------------------------------

# What `dvc exp run --queue -S 'seed=3,4'` and `dvc queue status` printed on a tiny repository.
QUEUED = """\
Queueing with overrides '{'params.yaml': ['seed=3']}'.
Queued experiment 'calmy-tire' for future execution.
Queueing with overrides '{'params.yaml': ['seed=4']}'.
Queued experiment 'silly-muss' for future execution.
"""
STATUS = """\
Task     Name        Created    Status
b0920fa  calmy-tire  09:44 PM   {0}
4364713  silly-muss  09:44 PM   {1}
67bcead  ochre-good  09:43 PM   Failed

Worker status: 1 active, 0 idle
"""


def test_the_queue_helper_reads_dvc_s_output():
    assert queue.queued_names(QUEUED) == ["calmy-tire", "silly-muss"]
    states = queue.task_states(STATUS.format("Running", "Queued"))
    assert states == {"calmy-tire": "Running", "silly-muss": "Queued", "ochre-good": "Failed"}
    with pytest.raises(UserError, match="no `Queued experiment"):
        queue.queued_names("ERROR: unexpected error\n")


def test_wait_polls_until_its_experiments_are_done_and_names_the_failed_ones():
    looks = iter(
        [STATUS.format("Running", "Queued"), STATUS.format("Success", "Running"), STATUS.format("Success", "Success")]
    )
    slept = []
    # ochre-good, failed earlier and not queued by this run, does not fail it.
    queue.wait(["calmy-tire", "silly-muss"], status=lambda: next(looks), sleep=slept.append, poll_s=7.0)
    assert slept == [7.0, 7.0]
    with pytest.raises(UserError) as raised:
        queue.wait(["calmy-tire", "silly-muss"], status=lambda: STATUS.format("Failed", "Success"), sleep=slept.append)
    assert str(raised.value) == "1 of 2 queued experiments failed; see why: dvc queue logs calmy-tire"


@pytest.mark.e2e
def test_wait_reads_the_real_queue_status(experiments, monkeypatch, tmp_path):
    repo, _ = experiments
    monkeypatch.setenv("PATH", dvc_env()["PATH"])
    monkeypatch.chdir(repo)
    queue.wait(["calmy-tire"], sleep=pytest.fail)  # nothing was queued here: a name it does not list is done
    monkeypatch.chdir(tmp_path)  # not a DVC repository
    with pytest.raises(UserError, match="dvc queue status failed"):
        queue.dvc_queue_status()


def test_the_queue_helper_runs_as_a_module(tmp_path):
    (tmp_path / "queued.txt").write_text("")
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli.queue", str(tmp_path / "queued.txt")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert (
        done.returncode == 1 and done.stderr.startswith("error: no `Queued experiment") and done.stderr.count("\n") == 1
    )


def test_make_seeds_queues_one_experiment_per_seed_then_waits_and_saves():
    def dry_run(*variables: str) -> list[str]:
        made = subprocess.run(
            ["make", "--no-print-directory", "-n", "seeds", *variables],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        return made.stdout.splitlines()

    lines = dry_run()
    queued = next(line for line in lines if "dvc exp run --queue" in line)
    assert (
        "-S 'seed=0,1,2'" in queued and queued.endswith("> .dvc/tmp/seeds-queued.txt") and "mkdir -p .dvc/tmp/" in lines
    )
    assert any(line.endswith("dvc queue start -j 1") for line in lines)
    assert lines[-2].endswith("-m pipeline.cli.queue .dvc/tmp/seeds-queued.txt") and lines[-1].endswith(
        "petseg seeds --save"
    )
    lines = dry_run("SEEDS=3,4", "SETS=-S lr=1e-4", "JOBS=2")
    assert any("dvc exp run --queue -S 'seed=3,4' -S lr=1e-4 >" in line for line in lines)
    assert any(line.endswith("dvc queue start -j 2") for line in lines)
