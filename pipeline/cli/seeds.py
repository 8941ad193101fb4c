"""`petseg seeds [CSV]`: each model's headline test score (Dice, or mIoU for a multi-class task) over the seeds
of each setting, from the table `dvc exp show --csv` prints: how large the noise of one training is.

The table's columns are DVC's own (:data:`DVC_COLUMNS`), then the metrics, the params and the dependencies
(dvc/repo/experiments/show.py). The scores are metrics/test.json's ``<score>.<model>`` (the plot stage's summary,
the project's declared metrics file); a column is a param when its first dotted part is a key of params.yaml's
schema (:class:`~pipeline.core.param_schema.Params`), so that a key set with hydra's ``+`` counts too. DVC
prefixes a name with its file (``params.yaml:seed``) only when two files share it.

A *setting* is one set of params but ``seed``: the experiments of one setting differ only by their seed, so
the spread of their scores is the noise of a training run (initialisation, augmentation and batch order). The
saved file (``--save``, :data:`~pipeline.cli.options.SEEDS_FILE`) is what `petseg diff` reads it from.
"""

import io
import json
import math
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from pipeline.core.constants import CLASS_IOU, HEADLINE_METRICS, MULTICLASS_HEADLINE_METRICS, score_label
from pipeline.core.errors import UserError, first_line
from pipeline.core.io import write_json
from pipeline.core.messages import plural
from pipeline.core.param_schema import Params

# `dvc exp show --csv`'s own columns (dvc/repo/experiments/show.py); State and Executor come with the queue.
DVC_COLUMNS = ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")
SEED = "seed"
# A task's headline score (pipeline/core/constants.py): a multi-class task's where an experiment has it, else Dice.
SCORES = (MULTICLASS_HEADLINE_METRICS[0], HEADLINE_METRICS[0])
# A score column is ``<score>.<model>``: a headline score, or a class's IoU in a multi-class summary.
_SCORE_COLUMN = re.compile(rf"^(?:[^:]+:)?({'|'.join(SCORES)}|{CLASS_IOU}[^.]+)\.([^.]+)$")
# How the table marks rows: a commit and the workspace are "baseline"; experiments are "branch_base"/"branch_commit".
_BASELINE = "baseline"
_ALL = " all"  # a grouping column no `dvc exp show` column can be named (none starts with a space)
UNSET = "unset"  # how the report shows a param an experiment lacks (the CSV's empty cell: a `+key` set on others)


@dataclass(frozen=True)
class Spread:
    """One model's headline test score (``metric``: "dice" or "miou") over the runs of one setting: run ``i``
    trained with seed ``seeds[i]`` and scored ``values[i]``; ``sd`` is the sample standard deviation (n - 1;
    NaN for one run), ``min`` and ``max`` the extremes."""

    model: str
    metric: str
    seeds: list[int]
    values: list[float]
    mean: float
    sd: float
    min: float
    max: float

    @property
    def range(self) -> float:
        """max - min: the largest change that seeds alone made."""
        return self.max - self.min


@dataclass(frozen=True)
class Setting:
    """The experiments that share every param but ``seed``: those params (name → the CSV's text, "" where
    unset) and each model's :class:`Spread`."""

    params: dict[str, str]
    spreads: list[Spread]

    @property
    def runs(self) -> int:
        """The most runs any model has in this setting."""
        return max(len(s.values) for s in self.spreads)


def dvc_csv(root: Path) -> str:
    """The output of `dvc exp show --csv` in ``root``. Raises UserError if dvc is not on PATH or fails."""
    try:
        shown = subprocess.run(["dvc", "exp", "show", "--csv"], cwd=root, capture_output=True, text=True)
    except FileNotFoundError:
        raise UserError("dvc: not found on PATH; activate the project's venv (. .venv/bin/activate)") from None
    if shown.returncode != 0:
        problem = next((line for line in shown.stderr.splitlines() if line.strip()), f"exit {shown.returncode}")
        raise UserError(f"dvc exp show --csv: {problem}; run petseg seeds in the project's repository")
    return shown.stdout


def _param(column: str) -> str:
    return column.rpartition(":")[2]


def _columns(table: pd.DataFrame, where: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The param columns and, per model, its score columns (metric → column). Raises UserError if the table
    is not `dvc exp show --csv`'s or holds no score or no seed."""
    if "typ" not in table.columns:
        raise UserError(f"{where}: not a `dvc exp show --csv` table (no typ column); give what that command prints")
    fields = set(Params.model_fields)
    params = [c for c in table.columns if c not in DVC_COLUMNS and _param(c).split(".")[0] in fields]
    scores: dict[str, dict[str, str]] = {}
    for column in table.columns:
        if column not in params and (found := _SCORE_COLUMN.match(column)):
            scores.setdefault(found[2], {})[found[1]] = column
    missing = [
        name for name, present in (("seed param", SEED in map(_param, params)), ("score", scores)) if not present
    ]
    if missing:
        raise UserError(
            f"{where}: no {' and no '.join(missing)} column (dice.<model> from metrics/test.json, seed from "
            "params.yaml); give the table `dvc exp show --csv` prints in the project"
        )
    return params, scores


def read_table(text: str, where: str) -> pd.DataFrame:
    """A `dvc exp show --csv` table as text cells ("" where empty; DVC writes "!" for a score it could not
    read). Raises UserError if it is not a CSV."""
    try:
        return pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"{where}: not a CSV ({first_line(err)}); give what `dvc exp show --csv` prints") from None


def _spread(group: pd.DataFrame, seed: str, model: str, metric: str, column: str) -> Spread:
    runs = group[[seed, column]].dropna().sort_values(seed, key=lambda s: s.astype(int), kind="stable")
    values = runs[column].astype(float)
    return Spread(
        model=model,
        metric=metric,
        seeds=runs[seed].astype(int).tolist(),
        values=values.tolist(),
        mean=float(values.mean()),
        sd=float(values.std(ddof=1)),
        min=float(values.min()),
        max=float(values.max()),
    )


def _spreads(group: pd.DataFrame, seed: str, scores: dict[str, dict[str, str]]) -> list[Spread]:
    """Each model's :class:`Spread` of its headline score over the runs in ``group`` (one setting; numeric score
    columns), then, for a multi-class task, one of each class's IoU."""
    spreads = []
    for model, columns in scores.items():
        metric = next(m for m in SCORES if m in columns and group[columns[m]].notna().any())
        classes = [m for m in columns if m.startswith(CLASS_IOU) and group[columns[m]].notna().any()]
        spreads += [_spread(group, seed, model, m, columns[m]) for m in (metric, *classes)]
    return spreads


def settings(text: str, where: str) -> list[Setting]:
    """The settings of the experiments in a `dvc exp show --csv` table that have every model's score, in the
    table's order (newest first). Commits and the workspace are left out (an experiment records the params it
    ran with; a commit may hold scores of other params, e.g. the README's ``-S`` settings). A run counts once:
    rows equal in every param and score (an experiment restored from DVC's run cache) are one.

    Raises UserError as :func:`read_table` and :func:`_columns`, or if no experiment has every model's score.
    """
    table = read_table(text, where)
    params, scores = _columns(table, where)
    seed = next(c for c in params if _param(c) == SEED)
    numbers = table[[c for columns in scores.values() for c in columns.values()]].apply(pd.to_numeric, errors="coerce")
    scored = pd.concat([numbers[list(columns.values())].notna().any(axis=1) for columns in scores.values()], axis=1)
    keep = (table["typ"] != _BASELINE) & scored.all(axis=1) & pd.to_numeric(table[seed], errors="coerce").notna()
    runs = pd.concat([table[params], numbers], axis=1)[keep].drop_duplicates()
    if runs.empty:
        raise UserError(
            f"{where}: no experiment with every model's test score; run `make seeds` (docs/training.md) and wait "
            "for `dvc queue status` to show them done"
        )
    others = [c for c in params if c != seed]
    # The constant first key makes a table whose only param is seed one setting (pandas wants a key).
    grouped = runs.assign(**{_ALL: ""}).groupby([_ALL, *others], sort=False)
    return [
        Setting({_param(c): key[1 + i] for i, c in enumerate(others)}, _spreads(group, seed, scores))
        for key, group in grouped
    ]


def _number(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def _describe(setting: Setting, differing: list[str]) -> str:
    if not differing:
        return "every experiment has the same params but seed"
    return ", ".join(f"{name}={setting.params[name] or UNSET}" for name in differing)


def render_text(found: list[Setting], where: str) -> str:
    """A plain-text report: per setting of two runs or more, the params that tell it from the others, then
    per model the runs, mean, sample standard deviation, min, max and range of its score, and its seeds."""
    shown = [s for s in found if s.runs >= 2]
    if not shown:
        raise UserError(
            f"{where}: no setting has two runs ({len(found)} {plural(len(found), 'setting')} of one run each); "
            "a spread needs two seeds or more: `make seeds` runs seeds 0,1,2"
        )
    differing = [name for name in shown[0].params if len({s.params[name] for s in shown}) > 1]
    runs = sum(s.runs for s in shown)
    lines = [
        f"petseg seeds: test scores over seeds, {runs} runs in {len(shown)} {plural(len(shown), 'setting')} ({where})"
    ]
    width = max(len(spread.model) for setting in shown for spread in setting.spreads)
    label = max(len(score_label(spread.metric)) for setting in shown for spread in setting.spreads)
    for number, setting in enumerate(shown, 1):
        lines += ["", f"setting {number} of {len(shown)}: {_describe(setting, differing)}"]
        header = ("runs", "mean", "sd", "min", "max", "range")
        lines.append(f"  {'model':<{width}}  {'score':<{label}}  " + "  ".join(f"{h:>6}" for h in header) + "  seeds")
        for s in setting.spreads:
            numbers = "  ".join(_number(v) for v in (s.mean, s.sd, s.min, s.max, s.range))
            seeds = ",".join(map(str, s.seeds))
            scored = f"{s.model:<{width}}  {score_label(s.metric):<{label}}"
            lines.append(f"  {scored}  {len(s.values):>6}  {numbers}  {seeds}")
    left_out = len(found) - len(shown)
    if left_out:
        lines += ["", f"left out: {left_out} {plural(left_out, 'setting')} of one run (a spread needs two seeds)"]
    return "\n".join(lines) + "\n"


def _by_model(spreads: list[Spread]) -> dict[str, dict[str, dict]]:
    models: dict[str, dict[str, dict]] = {}
    for s in spreads:
        models.setdefault(s.model, {})[s.metric] = {k: v for k, v in asdict(s).items() if k not in ("model", "metric")}
    return models


def save(path: str | Path, found: list[Setting]) -> None:
    """Write the settings of two runs or more to ``path`` as JSON, atomically: ``{"settings": [{"params":
    {name: value as the CSV shows it; unset ones left out}, "models": {model: {metric: {"seeds", "values",
    "mean", "sd", "min", "max"}}}}]}``, the metrics being the headline score and, for a multi-class task, each
    class's IoU (``iou_<class>``). Scores are fractions in [0, 1]."""
    write_json(
        path,
        {
            "settings": [
                {
                    "params": {name: value for name, value in setting.params.items() if value != ""},
                    "models": _by_model(setting.spreads),
                }
                for setting in found
                if setting.runs >= 2
            ]
        },
    )


def widest_spreads(path: Path) -> dict[tuple[str, str], Spread]:
    """Per (model, metric), the :class:`Spread` with the widest range among the settings in ``path`` (a file
    :func:`save` wrote); {} when there is no such file. The widest, since a change between two settings must
    exceed the noise of each. Raises UserError if the file is not one :func:`save` wrote."""
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())["settings"]
        spreads = [
            Spread(model=model, metric=metric, **values)
            for setting in saved
            for model, metrics in setting["models"].items()
            for metric, values in metrics.items()
        ]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not what `petseg seeds --save` writes ({first_line(err)}); run it again") from None
    return {(s.model, s.metric): s for s in sorted(spreads, key=lambda s: s.range)}
