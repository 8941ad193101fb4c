"""Each stage's dvc.yaml deps cover every project module its script imports, transitively.

DVC reruns a stage only when a listed dep changes, so a module missing from the list (say the
params schema, which decides which key overrides which) would let an edit slip through unrun. A
dep may name a package folder (all its modules); a training stage lists nothing it does not
import, since a spurious rerun there costs a training. dvc.yaml is read through DVC itself, so
its templating (stage-level vars, YAML merge keys) resolves as `dvc repro` resolves it.
"""

import ast
import re
from pathlib import Path

import pytest

from tests.support import REPO

# Imported by every stage, but they only word error messages: listing them on a training stage would
# retrain both models for a reworded message.
MESSAGES_ONLY = {"pipeline/core/errors.py", "pipeline/core/messages.py"}
# Decide how long processes live (children die with a killed stage; an interrupted stage ends in one
# line), never what they compute.
PROCESS_LIFETIME = {"pipeline/core/orphans.py", "pipeline/core/runner.py"}
# Imported, but never run for that stage's model: the registry imports both architectures.
OTHER_ARCHITECTURE = {"unet": "pipeline/models/resnet34_unet.py", "resnet34_unet": "pipeline/models/unet.py"}


def stages() -> dict[str, tuple[str, list[str]]]:
    """Stage name → (cmd, dep paths) as DVC resolves dvc.yaml."""
    from dvc.repo import Repo

    with Repo(str(REPO)) as repo:
        return {stage.name: (stage.cmd, [dep.def_path for dep in stage.deps]) for stage in repo.index.stages}


def module_file(name: str) -> Path | None:
    """The file Python runs for ``import name`` within the repository, or None (a class, a function)."""
    path = REPO.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def has_code(file: Path) -> bool:
    """Whether ``file`` does more than hold a docstring (a package's __init__ often does not)."""
    body = ast.parse(file.read_text()).body
    return any(not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)) for node in body)


def imported_files(path: Path) -> set[Path]:
    """Project files ``path`` imports anywhere (also inside functions), with their packages' __init__."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] not in ("pipeline", "stages"):
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):
                file = module_file(".".join(parts[:i]))
                if file is not None and (file.name != "__init__.py" or has_code(file)):
                    found.add(file)
    return found


def closure(script: Path) -> set[str]:
    seen, todo = set(), [script]
    while todo:
        file = todo.pop()
        if file not in seen:
            seen.add(file)
            todo.extend(imported_files(file))
    return {file.relative_to(REPO).as_posix() for file in seen}


def code_deps(deps: list[str]) -> set[str]:
    """The project modules ``deps`` name: .py files, and every module with code in a listed folder."""
    files = set()
    for dep in deps:
        path = REPO / dep
        if dep.endswith(".py"):
            files.add(dep)
        elif path.is_dir() and dep.split("/")[0] in ("pipeline", "stages"):
            files |= {p.relative_to(REPO).as_posix() for p in path.rglob("*.py") if has_code(p)}
    return files


STAGES = stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_deps_cover_every_module_the_stage_script_imports(name):
    cmd, deps = STAGES[name]
    script = re.search(r"python -m (stages\.\w+)", cmd).group(1)
    model = re.search(r"--model (\w+)", cmd)
    needed = closure(module_file(script)) - MESSAGES_ONLY - PROCESS_LIFETIME
    if model:
        needed.discard(OTHER_ARCHITECTURE[model.group(1)])
    listed = code_deps(deps)
    assert all((REPO / dep).exists() for dep in deps if dep.startswith(("pipeline/", "stages/"))), deps
    assert not needed - listed, f"{name}: add to deps in dvc.yaml: {sorted(needed - listed)}"
    if script == "stages.train":  # a module it does not import must not retrain it
        assert not listed - needed, f"{name}: a training stage lists modules it does not import: {listed - needed}"


def test_the_import_walk_sees_imports_inside_functions_and_packages(tmp_path):
    # The walk itself must not miss what the stages rely on: a lazy import inside a function, and
    # the modules a package folder holds.
    found = closure(REPO / "stages" / "train.py")
    assert {"pipeline/core/params.py", "pipeline/models/registry.py", "pipeline/models/unet.py"} <= found
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from pipeline.report.overlays import tint\n")
    assert imported_files(lazy) == {REPO / "pipeline" / "report" / "overlays.py"}
    assert "pipeline/train/fit.py" in code_deps(["pipeline/train"])
    assert "pipeline/train/__init__.py" not in code_deps(["pipeline/train"])  # a docstring decides nothing


def test_training_stages_follow_every_key_that_decides_the_weights():
    # A stage's params list is the one list DVC cannot derive from the code: a training key missing
    # from it would leave both models as they were when the key changes.
    from dvc.repo import Repo

    from pipeline.core.param_training import Train
    from pipeline.core.params import TrainKeys

    # How often the resume state is written and where machines meet do not change the weights.
    section = {f"train.{key}" for key in Train.model_fields} - {"train.resume_every_s", "train.rdzv_endpoint"}

    with Repo(str(REPO)) as repo:
        trains = [stage for stage in repo.index.stages if "stages.train" in stage.cmd]
        assert len(trains) == 2
        for stage in trains:
            model = re.search(r"--model (\w+)", stage.cmd).group(1)
            listed = {key for dep in stage.deps for key in getattr(dep, "params", [])}
            needed = set(TrainKeys.model_fields) | section | {"augmentation", model}
            assert not needed - listed, f"{stage.name}: add to its params in dvc.yaml: {sorted(needed - listed)}"
