"""Content stamps: has a pipeline step already run on exactly these inputs, with its outputs intact?

A stamp (outputs/<profile>/.stamps/<step>.json) is written only after a step succeeds.
It holds a fingerprint of the step's inputs (every file's sha256, maerak/fingerprint.py, plus the code the step runs:
its verb's module and every project module that imports, transitively, `code_files`) and
a listing of its outputs (path, size, mtime). A step is skipped when both still match:
an interrupted step has no stamp, a changed input changes the fingerprint, and a
half-rewritten or deleted output changes the listing.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from maerak import fingerprint as fp
from maerak.files import atomic_write_json

# Logs, not results: Axolotl rewrites output_dir/debug.log on every command that names that
# directory (the merge appends to stage 1's), which must not make stage 1 look changed.
LOGS = ("debug.log",)


def _files(path: Path, exclude: tuple[Path, ...] = ()) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and not any(p == e or e in p.parents for e in exclude))


def listing(paths: Iterable[Path], exclude: tuple[Path, ...] = ()) -> list[list[Any]]:
    """[path, size, mtime_ns] of every file under `paths`: changes whenever a file is rewritten."""
    rows = []
    for path in paths:
        for f in (f for f in _files(path, exclude) if f.name not in LOGS):
            st = f.stat()
            rows.append([str(f), st.st_size, st.st_mtime_ns])
    return rows


def fingerprint(paths: Iterable[Path], extra: Iterable[str] = ()) -> str:
    """sha256 over the inputs: every file's content (maerak/fingerprint.py, memoized so a
    re-run over an unchanged 18 GB checkpoint does not read it again), and missing paths as such."""
    return fp.paths_digest(paths, extra)


def code_files(modules: Iterable[str], root: Path) -> tuple[Path, ...]:
    """The source files a step runs: `modules` (its verb's, plus e.g. an Axolotl plugin its YAML
    names) and every project module they import, read from the source (maerak/imports.py). A
    docstring edit in inference/evaluate.py then redoes evaluate, not training."""
    from maerak.imports import closure

    return tuple(closure(tuple(modules), root))


def environment_version(root: Path, dtypes: str = "") -> str:
    """What every step runs on: the lock file, torch, CUDA and the device (fingerprint.environment),
    and `dtypes`: what `dtype: auto` chose on this CPU (maerak/cpu_dtype.py `environment`), so a run
    moved to a CPU where it chooses otherwise redoes the steps ("" when nothing is auto)."""
    return fp.environment_digest(root) + (f"+dtypes={dtypes}" if dtypes else "")


def stamp_path(state_dir: Path, step: str) -> Path:
    return state_dir / f"{step.replace('/', '_')}.json"


def is_done(state_dir: Path, step: str, inputs_fp: str, outputs: Iterable[Path], exclude: tuple[Path, ...] = ()) -> bool:
    path = stamp_path(state_dir, step)
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(stamp, dict) and stamp.get("inputs") == inputs_fp
            and stamp.get("outputs") == listing(outputs, exclude))


def mark_done(state_dir: Path, step: str, inputs_fp: str, outputs: Iterable[Path], exclude: tuple[Path, ...] = ()) -> Path:
    return atomic_write_json(stamp_path(state_dir, step),
                             {"step": step, "inputs": inputs_fp, "outputs": listing(outputs, exclude)})


def clear(state_dir: Path, step: str) -> None:
    stamp_path(state_dir, step).unlink(missing_ok=True)
