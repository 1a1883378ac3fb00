"""The direction of dependencies: core (maerak/) ← stages (preprocessing/, training/, inference/) ← entry
points (pipeline/). Read from the source (function-level imports too), so a hidden import counts."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE, STAGES, ENTRY = "maerak", ("preprocessing", "training", "inference"), "pipeline"
PACKAGES = (CORE, *STAGES, ENTRY)


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def project_imports(path: Path) -> set[str]:
    """Every project module `path` imports, anywhere in the file (`from pkg import mod` names the module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports the module; `from pkg.mod import name` imports pkg.mod
            subs = [f"{node.module}.{a.name}" for a in node.names if module_path(f"{node.module}.{a.name}")]
            names = subs or [node.module]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES and module_path(n) is not None}
    return {module_name(module_path(n)) for n in found} - {module_name(path)}


def module_path(name: str) -> Path | None:
    base = ROOT.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def graph() -> dict[str, set[str]]:
    return {module_name(p): project_imports(p) for pkg in PACKAGES for p in sorted((ROOT / pkg).glob("*.py"))}


def test_the_core_imports_no_stage_and_no_entry_point():
    bad = {m: sorted(d for d in deps if d.split(".")[0] != CORE) for m, deps in graph().items() if m.startswith(CORE + ".")}
    assert not {m: d for m, d in bad.items() if d}


def test_stages_import_only_the_core_and_themselves():
    bad = {}
    for m, deps in graph().items():
        pkg = m.split(".")[0]
        if pkg in STAGES:
            other = sorted(d for d in deps if d.split(".")[0] not in (CORE, pkg))
            if other:
                bad[m] = other
    assert not bad


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                return path + [node, dep]
            if dep not in state and (cycle := visit(dep, path + [node])):
                return cycle
        state[node] = 2
        return None

    for node in sorted(g):
        if node not in state:
            assert (cycle := visit(node, [])) is None, " -> ".join(cycle)
