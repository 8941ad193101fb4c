"""End to end through the real `dvc` CLI, on copies of conftest's finished tiny pipeline: what review shows
(`dvc exp show`, `dvc metrics diff`) and bad params failing first, in one line. Apart from
test_pipeline_dvc.py so that pytest-xdist's two workers share the end-to-end work (each sends a module
whole to one worker)."""

import json
import re
import subprocess
from pathlib import Path

import pytest

from tests.support import DVC, dvc_env, edit_params, run, stages_run

pytestmark = pytest.mark.e2e


def _exp_show(repo: Path, *args: str, columns: int) -> str:
    """`dvc exp show --no-pager` as a terminal ``columns`` characters wide would show it."""
    env = dvc_env() | {"COLUMNS": str(columns)}
    command = [str(DVC), "exp", "show", "--no-pager", *args]
    return subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, check=True).stdout


def _review(repo: Path) -> dict:
    """Two experiments at other thresholds (so both models' scores change, and nothing retrains), then how
    `dvc exp show` lays them out."""
    for threshold in ("0.05", "0.1"):
        run(repo, "dvc", "exp", "run", "-S", f"evaluate.threshold={threshold}")
    return {
        "wide": _exp_show(repo, columns=2000),
        "narrow_changed": _exp_show(repo, "--only-changed", columns=160),
    }


def _reevaluate(repo: Path) -> dict:
    """The same models evaluated again (new throughput, same scores), what follows from it, then `dvc
    metrics diff`."""
    ran = stages_run(run(repo, "dvc", "repro", "-f", "evaluate@unet", "evaluate@resnet34_unet"))
    ran |= stages_run(run(repo, "dvc", "repro"))
    return {"ran": ran, "diff": json.loads(run(repo, "dvc", "metrics", "diff", "--json"))}


def _fails(*args: str, edit: dict | None = None):
    """A dvc command expected to fail (after ``edit`` to params.yaml): its exit code, stdout and stderr."""

    def job(repo: Path) -> tuple[int, str, str]:
        if edit:
            edit_params(repo, edit)
        proc = subprocess.run([str(DVC), *args], cwd=repo, env=dvc_env(), capture_output=True, text=True)
        return proc.returncode, proc.stdout, proc.stderr

    return job


BAD_CHANGES = {
    "+learning_rate=1e-3": "unknown key learning_rate; did you mean lr?",
    "lr=-1": "lr: must be greater than 0, got -1",
    "image_size=100": "image_size must be a multiple of 32, got 100",
    "loss=focal": "loss: must be 'ce_dice', 'dice' or 'ce', got 'focal'",
}
BAD_EDITS = {
    "learning_rate": ({"learning_rate": 0.001}, "unknown key learning_rate; did you mean lr?"),
    "treshold": ({"evaluate": {"treshold": 0.4}}, "unknown key evaluate.treshold; did you mean evaluate.threshold?"),
}

DVC_JOBS = {
    "review": _review,
    "reevaluate": _reevaluate,
    **{f"bad {change}": _fails("exp", "run", "-S", change) for change in BAD_CHANGES},
    **{f"bad edit {key}": _fails("repro", edit=edit) for key, (edit, _) in BAD_EDITS.items()},
}


# --- bad params: one error line, from validate, before any other stage --------------------------------


def _one_error_from_validate(result: tuple[int, str, str]) -> str:
    code, stdout, stderr = result
    output = stdout + stderr
    assert code != 0 and "Traceback" not in output, output
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    assert stages_run(output) == {"validate"}, output  # before any other stage
    return errors[0]


@pytest.mark.parametrize("change", BAD_CHANGES)
def test_a_bad_or_unknown_param_fails_first_in_one_line(dvc_jobs, change):
    assert _one_error_from_validate(dvc_jobs[f"bad {change}"]) == f"error: params.yaml: {BAD_CHANGES[change]}"


@pytest.mark.parametrize("key", BAD_EDITS)
def test_a_key_misspelt_in_params_yaml_fails_dvc_repro(dvc_jobs, key):
    assert _one_error_from_validate(dvc_jobs[f"bad edit {key}"]) == f"error: params.yaml: {BAD_EDITS[key][1]}"


# --- review: what `dvc exp show` and `dvc metrics diff` show --------------------------------------------


def _header(table: str) -> list[str]:
    """The column names of a `dvc exp show` table (its first line of text, between the rules)."""
    line = next(line for line in table.splitlines() if line.strip() and not line.strip().startswith("─"))
    return re.split(r"\s{2,}", line.strip())


def test_exp_show_puts_both_models_dice_first_and_only_changed_fits_160_columns(dvc_jobs):
    review = dvc_jobs["review"]
    columns = _header(review["wide"])
    assert columns[2:4] == ["dice.unet", "dice.resnet34_unet"]  # after Experiment and Created
    narrow = review["narrow_changed"]
    assert max(len(line.rstrip()) for line in narrow.splitlines()) <= 160
    assert {"dice.unet", "dice.resnet34_unet"} <= set(_header(narrow))  # whole, not collapsed to "…"


def test_metrics_diff_shows_no_change_when_the_same_models_are_evaluated_again(dvc_jobs):
    reevaluated = dvc_jobs["reevaluate"]
    assert {"evaluate@unet", "evaluate@resnet34_unet", "plot"} <= reevaluated["ran"]  # the metrics were rewritten
    assert reevaluated["diff"] == {}
