"""Each stage's dvc.yaml deps list exactly the project modules its script imports, transitively.

DVC reruns a stage only when a listed dep changes, so a module missing from the list (say the
params schema, which decides which key overrides which) would let an edit slip through unrun.
"""

import ast
import re
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

# Imported by every stage, but they only word error messages: listing them would rerun the whole
# pipeline, trainings included, for a reworded message.
MESSAGES_ONLY = {"pipeline/errors.py", "pipeline/params_messages.py"}
# Decides how long child processes live (they die with a killed stage), never what they compute.
PROCESS_LIFETIME = {"pipeline/orphans.py"}
# Imported, but never run for that stage's model: the registry imports both architectures.
NOT_DECIDING = {
    "train-unet": {"pipeline/models/resnet34_unet.py"},
    "export-unet": {"pipeline/models/resnet34_unet.py"},
    "evaluate-unet": {"pipeline/models/resnet34_unet.py"},
    "train-resnet34unet": {"pipeline/models/unet.py"},
    "export-resnet34unet": {"pipeline/models/unet.py"},
    "evaluate-resnet34unet": {"pipeline/models/unet.py"},
}


def stages() -> dict[str, dict]:
    text = (REPO / "dvc.yaml").read_text()
    paths = yaml.safe_load(text)["vars"][0]["paths"]
    resolved = re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m.group(1)], text)
    return yaml.safe_load(resolved)["stages"]


def module_file(name: str) -> Path | None:
    """The file Python runs for ``import name`` within the repository, or None (a class, a function)."""
    path = REPO.joinpath(*name.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def has_code(init: Path) -> bool:
    body = ast.parse(init.read_text()).body
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


STAGES = stages()


@pytest.mark.parametrize("name", sorted(STAGES))
def test_deps_list_every_module_the_stage_script_imports(name):
    stage = STAGES[name]
    script = re.search(r"python -m (stages\.\w+)", stage["cmd"]).group(1)
    needed = closure(module_file(script)) - MESSAGES_ONLY - PROCESS_LIFETIME - NOT_DECIDING.get(name, set())
    listed = {dep for dep in stage["deps"] if dep.endswith(".py")}
    assert not needed - listed, f"{name}: add to deps in dvc.yaml: {sorted(needed - listed)}"
    assert not listed - needed, f"{name}: listed in deps but not imported: {sorted(listed - needed)}"


def test_the_import_walk_sees_imports_inside_functions_and_packages(tmp_path):
    # The walk itself must not miss what the stages rely on: a lazy import inside a function, and
    # a package whose __init__ runs code (the model registry).
    found = closure(REPO / "stages" / "train.py")
    assert {"pipeline/params.py", "pipeline/models/__init__.py", "pipeline/models/unet.py"} <= found
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from pipeline.overlays import tint\n")
    assert imported_files(lazy) == {REPO / "pipeline" / "overlays.py"}
