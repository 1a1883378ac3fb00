"""The project's import graph, read from the source (function-level imports too): which project
modules a module imports. tests/test_layout.py checks its direction; maerak/stamps.py
fingerprints, per pipeline step, exactly the modules that step runs.

Standard library only.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE, STAGES, ENTRY = "maerak", ("preprocessing", "training", "inference"), "pipeline"
PACKAGES = (CORE, *STAGES, ENTRY)


def module_path(name: str, root: Path = ROOT) -> Path | None:
    base = root.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every project module `path` imports, anywhere in the file (`from pkg import mod` names the module)."""
    st = path.stat()
    return set(_imports(str(path), str(root), (st.st_ino, st.st_mtime_ns, st.st_ctime_ns)))


@cache
def _imports(path: str, root_s: str, _stat: tuple[int, int, int]) -> frozenset[str]:
    root = Path(root_s)
    found: set[str] = set()
    for node in ast.walk(ast.parse(Path(path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import mod` imports the module; `from pkg.mod import name` imports pkg.mod
            subs = [f"{node.module}.{a.name}" for a in node.names if module_path(f"{node.module}.{a.name}", root)]
            names = subs or [node.module]
        else:
            continue
        found |= {n for n in names if n.split(".")[0] in PACKAGES and module_path(n, root) is not None}
    this = module_name(Path(path), root)
    return frozenset(module_name(module_path(n, root), root) for n in found) - {this}  # type: ignore[arg-type]


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Every module of the project's packages -> the project modules it imports."""
    return {module_name(p, root): project_imports(p, root) for pkg in PACKAGES for p in sorted((root / pkg).glob("*.py"))}


def closure(modules: list[str] | tuple[str, ...], root: Path = ROOT) -> list[Path]:
    """The files of `modules` and of every project module they import, transitively (with their
    packages' __init__.py, which Python runs first), sorted."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen or module_path(name, root) is None:
            continue
        seen.add(name)
        todo += sorted(project_imports(module_path(name, root), root))  # type: ignore[arg-type]
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
    return sorted(module_path(n, root) for n in seen)  # type: ignore[misc]
