"""The shape of the house: no import cycle among the package's modules (counting
imports inside functions), and data flowing one way between the rooms."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = "dials_spot_size_analysis"
ROOT = Path(__file__).resolve().parents[1]
ROOMS = ("formats", "algorithms", "report", "parallel", "phil", "command_line")
# What each room may import of the package (besides its own modules and the leaves
# errors.py, jit.py, recently_used.py, threads.py and the package's __init__).
ALLOWED = {
    "formats": set(),
    "algorithms": {"formats"},
    "report": {"algorithms", "formats"},
    "parallel": {"algorithms", "formats"},
    "phil": {"algorithms", "parallel"},
    "command_line": {"algorithms", "formats", "parallel", "phil", "report"},
    "api": {"algorithms", "formats", "parallel", "phil", "report"},
}
LEAVES = {"errors", "jit", "recently_used", "threads", "__init__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join((PACKAGE, *parts))


def package_modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT).parts
        if relative[0] in ROOMS or len(relative) == 1:
            if relative[0] not in ("setup.py",):
                found[module_name(path)] = path
    return found


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every package module ``name`` imports, at any depth of its code."""
    is_package = path.name == "__init__.py"
    base = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                prefix = ".".join(anchor + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # "from x import y": the module x.y where y is one, else the module x
            submodules = [f"{prefix}.{alias.name}" for alias in node.names]
            targets = [t for t in submodules if t in modules]
            if len(targets) < len(submodules):
                targets.append(prefix)
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def room(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_the_walk_finds_the_package_and_imports_inside_functions():
    imports = graph()
    assert f"{PACKAGE}.parallel.pool" in imports and f"{PACKAGE}.api" in imports
    program = f"{PACKAGE}.command_line.spot_size_analysis"
    assert f"{PACKAGE}.report.html" in imports[program]  # imported inside a function


def test_no_import_cycles():
    imports = graph()
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for target in sorted(imports[name]):
            if state.get(target) == 1:
                cycle = path[path.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[name] = 2

    for name in sorted(imports):
        if name not in state:
            visit(name)


def test_rooms_import_only_downstream():
    wrong = []
    for name, targets in graph().items():
        source = room(name)
        if source in LEAVES:
            if any(room(t) not in LEAVES for t in targets):
                wrong.append(f"{name} (a leaf) imports {sorted(targets)}")
            continue
        allowed = ALLOWED.get(source, set()) | {source} | LEAVES
        wrong += [f"{name} -> {t}" for t in sorted(targets) if room(t) not in allowed]
    assert wrong == []


def test_algorithms_use_the_formats_models_not_the_files():
    """algorithms/ knows arrays and the small model objects, not files: it may take a
    formats model (an Experiment, a ShoeboxColumn) but never reads, maps or releases
    a file."""
    allowed = {f"{PACKAGE}.formats.experiments", f"{PACKAGE}.formats.shoeboxes"}
    wrong = [
        f"{name} -> {target}"
        for name, targets in graph().items()
        if room(name) == "algorithms"
        for target in sorted(targets)
        if room(target) == "formats" and target not in allowed
    ]
    assert wrong == []
