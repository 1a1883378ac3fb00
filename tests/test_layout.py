"""The direction of dependencies: core (maerak/) ← stages (preprocessing/, training/, inference/) ← entry
points (pipeline/). Read from the source (function-level imports too), so a hidden import counts."""
from __future__ import annotations

from maerak.imports import CORE, STAGES, graph


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
