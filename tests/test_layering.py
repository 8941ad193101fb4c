"""The library's packages import only packages below them, and no module imports itself back.

The order is the one pipeline/__init__.py gives: core, data, models, evaluate, train, report,
cli. A lower package never imports a higher one, so each can be read, tested and reused without
the ones above it; ``core`` is what the params schema and the cheap stages stand on.
"""

import ast
from pathlib import Path

import pytest

from tests.support import REPO

ORDER = ("core", "data", "models", "evaluate", "train", "report", "cli")
PIPELINE = REPO / "pipeline"
MAX_FUNCTION_LINES = 60  # a screen


def imports(path: Path) -> set[str]:
    """The ``pipeline.*`` modules that ``path`` imports anywhere in it (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return {name for name in found if name.startswith("pipeline.")}


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")


MODULES = {module_name(p): p for p in sorted(PIPELINE.rglob("*.py"))}


def package(module: str) -> str | None:
    """The sub-package of ``pipeline.<package>.<...>``, or None for the top level (__main__)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in ORDER) else None


def test_every_module_sits_in_a_package_of_the_order():
    loose = [m for m in MODULES if package(m) is None and m not in ("pipeline", "pipeline.__main__")]
    assert not loose, f"modules outside the sub-packages: {loose}"
    assert {package(m) for m in MODULES} - {None} == set(ORDER)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if package(m)))
def test_a_package_imports_only_packages_below_it(module):
    rank = ORDER.index(package(module))
    upward = sorted(
        name for name in imports(MODULES[module]) if package(name) in ORDER and ORDER.index(package(name)) > rank
    )
    assert not upward, f"{module} imports from higher packages: {upward}"


def test_no_module_imports_itself_back():
    graph = {m: {n for n in imports(p) if n in MODULES and n != m} for m, p in MODULES.items()}

    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in graph[node]:
                if nxt == start:
                    return path + [start]
                if nxt not in path:
                    stack.append((nxt, path + [nxt]))
        return None

    cycles = [c for c in map(cycle_from, graph) if c]
    assert not cycles, f"import cycle: {' -> '.join(cycles[0])}"


def long_functions(path: Path, limit: int = MAX_FUNCTION_LINES) -> dict[str, int]:
    """``{name: lines}`` of the functions and methods in ``path`` longer than ``limit`` lines, docstring included."""
    nodes = ast.walk(ast.parse(path.read_text()))
    where = path.relative_to(REPO) if path.is_relative_to(REPO) else path
    spans = {
        f"{where}:{node.lineno} {node.name}": node.end_lineno - node.lineno + 1
        for node in nodes
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    }
    return {name: n for name, n in spans.items() if n > limit}


def test_every_function_reads_in_one_screen():
    # Modules are split by concern, never to meet a line count; a function that does not fit a screen
    # does several steps, and each step becomes a function.
    files = [p for folder in ("pipeline", "stages", "bench") for p in sorted((REPO / folder).rglob("*.py"))]
    long = {name: n for path in files for name, n in long_functions(path).items()}
    assert not long, f"split these by step: {long}"


def test_the_length_check_counts_a_function_with_its_docstring(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 2))
    path = tmp_path / "f.py"
    path.write_text(f'def fits():\n    """Doc."""\n{body}\n\n\ndef over():\n    """Doc."""\n{body}\n    return 0\n')
    found = {name.split(" ")[-1]: n for name, n in long_functions(path, MAX_FUNCTION_LINES).items()}
    assert found == {"over": MAX_FUNCTION_LINES + 1}


def test_the_walk_sees_an_upward_import(tmp_path):
    # The check itself must catch what it guards against: a function-level import of a higher package.
    lazy = tmp_path / "lazy.py"
    lazy.write_text("def f():\n    from pipeline.cli.predict import run\n")
    assert imports(lazy) == {"pipeline.cli.predict", "pipeline.cli.predict.run"}
    assert package("pipeline.cli.predict.run") == "cli"
