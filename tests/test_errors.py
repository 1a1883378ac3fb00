"""One way to fail: library code raises maerak.errors.MaerakError (or a subclass); only the entry
points in pipeline/ turn it into an exit status. Read from the source, so a new `raise SystemExit`
below pipeline/ fails here."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

from maerak import errors
from maerak.imports import CORE, ROOT, STAGES


def library_files() -> list[Path]:
    return sorted(p for pkg in (CORE, *STAGES) for p in (ROOT / pkg).rglob("*.py"))


def is_main_guard(node: ast.AST) -> bool:
    """`if __name__ == "__main__":` (a module run as a script: `sys.exit(main())` is allowed there)."""
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def exits(path: Path) -> list[str]:
    """Every mention of SystemExit and every sys.exit/exit/quit call outside the __main__ guard."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    guarded = {id(n) for top in tree.body if is_main_guard(top) for n in ast.walk(top)}
    found = []
    for node in ast.walk(tree):
        if id(node) in guarded:
            continue
        if isinstance(node, ast.Name) and node.id == "SystemExit":
            found.append(f"{path}:{node.lineno}: SystemExit")
        elif isinstance(node, ast.Call):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id == "sys" else (
                f.id if isinstance(f, ast.Name) else "")
            if name in ("exit", "quit", "_exit"):
                found.append(f"{path}:{node.lineno}: {name}()")
    return found


def test_no_system_exit_below_pipeline():
    assert library_files() and not [e for p in library_files() for e in exits(p)]


def test_the_check_sees_a_system_exit(tmp_path):
    """Guard for the test above: the checker finds each form it forbids, and allows the script guard."""
    probe = tmp_path / "probe.py"
    probe.write_text("import sys\n\ndef f():\n    raise SystemExit('x')\n\ndef g():\n    sys.exit(2)\n\n"
                     "def h():\n    try:\n        pass\n    except SystemExit:\n        pass\n\n"
                     "if __name__ == '__main__':\n    sys.exit(f())\n", encoding="utf-8")
    assert sorted(e.rsplit(": ", 1)[1] for e in exits(probe)) == ["SystemExit", "SystemExit", "exit()"]


def test_every_project_error_is_a_maerak_error_and_none_an_exit():
    for cls in (errors.ConfigError, errors.DataError, errors.EmptyStage, errors.TrainError):
        assert issubclass(cls, errors.MaerakError) and not issubclass(cls, SystemExit)


def test_the_entry_point_prints_one_line_per_problem_and_exits_1(capsys):
    from maerak.schema import Problem
    from pipeline.cli import Verb, run_verb

    class Fake:
        @staticmethod
        def main(argv):
            raise errors.DataError([Problem("a.json", "x1", "category", "unknown"), Problem("a.json", "x2", "output", "bad")])

    import sys

    sys.modules["_fake_verb"] = Fake  # type: ignore[assignment]
    try:
        assert run_verb("v", [], {"v": Verb("_fake_verb", "")}) == 1
    finally:
        del sys.modules["_fake_verb"]
    assert capsys.readouterr().err.splitlines() == ["v: a.json: x1: category: unknown", "v: a.json: x2: output: bad"]


@pytest.mark.parametrize("argv, says", [
    (["--profile", "nope"], "prepare: unknown profile 'nope'; profiles.yml has: sample, official-cpu, competition, competition-orpo"),
])
def test_a_library_error_reaches_the_user_as_one_line(argv, says, capsys):
    from pipeline.cli import run_verb

    assert run_verb("prepare", argv) == 1
    assert capsys.readouterr().err.strip() == says
