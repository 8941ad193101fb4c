"""`petseg diff [REV]`: each model's headline test scores in the workspace against a git revision, and
whether its test Dice (mIoU for a multi-class task) changed by more than the noise (:mod:`pipeline.evaluate.compare`).

With the file `petseg seeds --save` writes (:data:`~pipeline.cli.options.SEEDS_FILE`, in the workspace), each
model's range of scores over training seeds is reported beside its change, and a change must also exceed it to be
better or worse (:func:`pipeline.evaluate.compare.verdict`).

Like `dvc metrics diff`, the old side is read through git (``git show REV:<path>``: the metrics files
are git-tracked) and the new side from the workspace. Which files to read comes from dvc.yaml, as DVC
resolves it: each evaluate stage's ``--metrics`` and ``--per-image`` outputs, and the figures in the plot
stage's ``--plots`` folder for the Markdown links.
"""

import io
import json
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from pipeline.cli.options import SEEDS_FILE
from pipeline.cli.seeds import Spread, widest_spreads
from pipeline.core.constants import HEADLINE_METRICS, MULTICLASS_HEADLINE_METRICS, score_label
from pipeline.core.errors import UserError, first_line
from pipeline.core.messages import plural
from pipeline.report.files import FIGURES

if TYPE_CHECKING:  # the module loads torch: imported where the comparison runs, not for --help
    from pipeline.evaluate.compare import DiceChange


@dataclass(frozen=True)
class Evaluated:
    """The files one evaluate stage writes that `petseg diff` reads, relative to the repository root."""

    model: str
    metrics: str
    per_image: str


@dataclass(frozen=True)
class Sources:
    """What the pipeline in dvc.yaml writes for review: one :class:`Evaluated` per model, and the
    figures to link (label → path)."""

    models: list[Evaluated]
    figures: dict[str, str]


def _option(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv and argv.index(name) + 1 < len(argv) else None


def read_sources(root: Path) -> Sources:
    """The evaluate and plot stages' outputs, from dvc.yaml as DVC resolves it. Raises UserError if
    ``root`` is not a DVC repository or dvc.yaml has no evaluate stage."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            commands = [shlex.split(stage.cmd) for stage in repo.index.stages if isinstance(stage.cmd, str)]
    except DvcException as err:
        raise UserError(
            f"{root}: cannot read the pipeline ({first_line(err)}); run petseg diff in the repository"
        ) from None
    models, figures = [], {}
    for argv in commands:
        if "stages.evaluate" in argv:
            metrics, per_image = _option(argv, "--metrics"), _option(argv, "--per-image")
            if metrics and per_image:
                # Each model's files lie in its own folder, named after it (pipeline/report/files.py).
                models.append(Evaluated(Path(metrics).parent.name, metrics, per_image))
        elif "stages.plot" in argv and _option(argv, "--plots"):
            for label, name in (("worst images", "worst"), ("learning curves", "curves")):
                figures[label] = (Path(_option(argv, "--plots")) / FIGURES[name]).as_posix()
    if not models:
        raise UserError(f"{root}/dvc.yaml: no evaluate stage with --metrics and --per-image; nothing to compare")
    return Sources(models, figures)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def check_revision(root: Path, rev: str) -> str:
    """The commit ``rev`` names, abbreviated. Raises UserError if ``root`` is not in a git repository
    or ``rev`` names no commit."""
    found = _git(root, "rev-parse", "--short", "--verify", "--quiet", f"{rev}^{{commit}}")
    if found.returncode != 0:
        inside = _git(root, "rev-parse", "--is-inside-work-tree").returncode == 0
        fix = "give a branch, tag or commit" if inside else "run petseg diff inside the project's git repository"
        raise UserError(f"{rev}: not a git revision here; {fix}")
    return found.stdout.strip()


def read_at(root: Path, rev: str | None, path: str) -> str:
    """The text of ``path`` (relative to ``root``) at git revision ``rev``, or in the workspace when
    ``rev`` is None. Raises UserError if it is absent there."""
    if rev is None:
        try:
            return (root / path).read_text()
        except FileNotFoundError:
            raise UserError(f"{path}: not in the workspace; run `dvc repro` first") from None
    shown = _git(root, "show", f"{rev}:{path}")
    if shown.returncode != 0:
        raise UserError(f"{rev}:{path}: not in that revision; commit the metrics/ folder after `dvc repro`")
    return shown.stdout


@dataclass(frozen=True)
class Judged:
    """One score's change (:class:`~pipeline.evaluate.compare.DiceChange`), its spread over seeds (None without a
    saved one for this model and score) and the verdict from both (:func:`pipeline.evaluate.compare.verdict`)."""

    change: "DiceChange"
    seeds: Spread | None
    verdict: str


@dataclass(frozen=True)
class ModelDiff:
    """One model's headline metrics at both sides (key → (old, new); a key absent on one side is None there),
    its headline score's :class:`Judged` change (Dice, or mIoU for a multi-class task) and, for a multi-class
    task, each class's IoU change."""

    model: str
    metrics: dict[str, tuple[float | None, float | None]]
    score: Judged
    classes: list[Judged]


def _json(text: str, where: str) -> dict:
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{where}: not valid JSON ({err}); rerun its evaluate stage") from None
    if not isinstance(values, dict):
        raise UserError(f"{where}: not a JSON object; rerun its evaluate stage")
    return values


def _headline(values: dict, key: str) -> float | None:
    value = values.get(key)
    return value if isinstance(value, int | float) and not isinstance(value, bool) else None


def _table(text: str, where: str) -> pd.DataFrame:
    try:
        return pd.read_csv(io.StringIO(text), dtype={"stem": str}, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise UserError(f"{where}: not a CSV ({first_line(err)}); rerun its evaluate stage") from None


def _judged(change: "DiceChange", seeds: Spread | None) -> Judged:
    from pipeline.evaluate.compare import verdict

    return Judged(change, seeds, verdict(change, seeds.range if seeds else None))


def compare(root: Path, rev: str, resamples: int, seed: int, level: float) -> tuple[list[ModelDiff], Sources]:
    """Every model's :class:`ModelDiff`, workspace against ``rev``, and the sources read. Raises
    UserError as :func:`read_sources`, :func:`check_revision` and :func:`read_at`, or when the two
    sides scored different test images."""
    from pipeline.evaluate.compare import class_changes, paired_bootstrap

    sources = read_sources(root)
    check_revision(root, rev)
    spreads = widest_spreads(root / SEEDS_FILE)
    diffs = []
    for evaluated in sources.models:
        old = _json(read_at(root, rev, evaluated.metrics), f"{rev}:{evaluated.metrics}")
        new = _json(read_at(root, None, evaluated.metrics), evaluated.metrics)
        keys = MULTICLASS_HEADLINE_METRICS if "miou" in new else HEADLINE_METRICS
        metrics = {k: (_headline(old, k), _headline(new, k)) for k in keys}
        tables = [
            _table(read_at(root, side, evaluated.per_image), f"{side + ':' if side else ''}{evaluated.per_image}")
            for side in (rev, None)
        ]
        where = f"{evaluated.per_image} at {rev} and now"
        judged = [
            _judged(change, spreads.get((evaluated.model, change.metric)))
            for change in (
                paired_bootstrap(*tables, resamples, seed, level, where),
                *class_changes(*tables, resamples, seed, level, where),
            )
        ]
        diffs.append(ModelDiff(evaluated.model, metrics, judged[0], judged[1:]))
    return diffs, sources


def _number(value: float | None) -> str:
    if value is None:
        return "-"
    return str(value) if isinstance(value, int) else f"{value:.4f}"


def _change(old: float | None, new: float | None) -> str:
    if old is None or new is None:
        return "-"
    change = new - old
    return f"{change:+d}" if isinstance(change, int) else f"{change:+.4f}"


def _summary(judged: Judged) -> str:
    d = judged.change
    interval = f"{100 * d.level:g} % CI [{d.low:+.4f}, {d.high:+.4f}]"
    summary = (
        f"{score_label(d.metric)} {d.change:+.4f}, {interval} over {d.images} test "
        f"{plural(d.images, 'image')}: {d.better} better, {d.worse} worse"
    )
    if judged.seeds is None:
        return summary
    s = judged.seeds
    return f"{summary}; over {len(s.values)} seeds {s.min:.4f}-{s.max:.4f} (range {s.range:.4f}, sd {s.sd:.4f})"


def _method(diffs: list[ModelDiff], resamples: int) -> str:
    saved = any(judged.seeds for diff in diffs for judged in (diff.score, *diff.classes))
    seeds = f"; seed ranges from {SEEDS_FILE}" if saved else ""
    return f"paired bootstrap, {resamples:,} resamples of the test images{seeds}"


def render_text(diffs: list[ModelDiff], rev: str, resamples: int) -> str:
    """A plain-text report: per model its verdict, the score's interval, each class's IoU verdict and interval
    (a multi-class task), then its metrics old → new."""
    lines = [f"petseg diff: workspace against {rev} ({_method(diffs, resamples)})"]
    for diff in diffs:
        lines += ["", f"{diff.model}: {diff.score.verdict} ({_summary(diff.score)})"]
        lines += [f"  {score_label(c.change.metric)}: {c.verdict} ({_summary(c)})" for c in diff.classes]
        width = max(len(k) for k in diff.metrics)
        lines.append(f"  {'metric':<{width}}  {rev:>10}  {'workspace':>10}  {'change':>8}")
        for key, (old, new) in diff.metrics.items():
            lines.append(f"  {key:<{width}}  {_number(old):>10}  {_number(new):>10}  {_change(old, new):>8}")
    return "\n".join(lines) + "\n"


def render_markdown(diffs: list[ModelDiff], rev: str, resamples: int, figures: dict[str, str]) -> str:
    """The same as a Markdown table, for a pull-request comment, with links to the review figures."""
    lines = [
        f"**petseg diff**: workspace against `{rev}` ({_method(diffs, resamples)})",
        "",
        f"| model | verdict | metric | {rev} | workspace | change |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for diff in diffs:
        for i, (key, (old, new)) in enumerate(diff.metrics.items()):
            model, verdict = (f"**{diff.model}**", f"**{diff.score.verdict}**") if i == 0 else ("", "")
            lines.append(f"| {model} | {verdict} | {key} | {_number(old)} | {_number(new)} | {_change(old, new)} |")
        for c in diff.classes:
            old, new = c.change.old, c.change.new
            label = score_label(c.change.metric)
            lines.append(f"| | {c.verdict} | {label} | {_number(old)} | {_number(new)} | {_change(old, new)} |")
    lines.append("")
    for diff in diffs:
        lines += [f"- {diff.model}: {_summary(diff.score)}"]
        lines += [f"  - {_summary(c)}" for c in diff.classes]
    if figures:
        lines += ["", " · ".join(f"[{label}]({path})" for label, path in figures.items())]
    return "\n".join(lines) + "\n"
