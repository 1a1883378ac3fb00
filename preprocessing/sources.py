"""Loaders, one per source kind named in preprocessing/sources.yml.

- official / items: competition-schema JSON (the profile's train.json; 모두의 말뭉치
  대화맥락추론 2023) through maerak.schema.load_items.
- correction: source/corrected sentence pairs, JSONL or CSV with named columns.
- magpie: JSONL or parquet with `conversations` (ShareGPT turns) or instruction /
  response columns, read with Hugging Face `datasets` from the local file.

A bad file raises maerak.schema.DataError whose problems name the file, the row and
the field; nothing is written by prepare in that case.
"""
from __future__ import annotations

import csv
import glob
import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maerak.errors import InputFileError
from maerak.files import MAX_SOURCE_BYTES, read_input_bytes
from maerak.schema import WARNING, DataError, Item, Problem, load_items, read_json
from preprocessing.config import TASK_KINDS, Correction, Magpie, Source, SourcesConfig


@dataclass
class Record:
    """One unit of a source: a task item, or a generic alpaca row (correction, Magpie)."""

    source: str
    id: str
    item: Item | None = None
    row: dict | None = None


@dataclass
class Loaded:
    name: str
    kind: str
    stages: tuple[int, ...]
    files: list[Path] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    raw_count: int = 0
    dropped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _fail(path: Path, row: str, fld: str, message: str) -> DataError:
    return DataError([Problem(str(path), row, fld, message)])


def resolve_paths(patterns: list[str], root: Path, fmt: dict[str, str]) -> list[Path]:
    found: list[Path] = []
    for pattern in patterns:
        pattern = pattern.format(**fmt)
        full = pattern if Path(pattern).is_absolute() else str(root / pattern)
        found += [Path(p) for p in sorted(glob.glob(full)) if Path(p).is_file()]
    return list(dict.fromkeys(found))


def unread_files(patterns: list[str], root: Path, fmt: dict[str, str]) -> list[Path]:
    """Files sitting in a source's folders that none of its patterns read (a .json among
    *.jsonl, a .txt): listed in the report so a user sees why their file was not used."""
    full = [p.format(**fmt) for p in patterns]
    full = [p if Path(p).is_absolute() else str(root / p) for p in full]
    folders = {Path(p).parent for p in full if glob.has_magic(Path(p).name) and not glob.has_magic(str(Path(p).parent))}
    read = set(resolve_paths(patterns, root, fmt))
    return sorted(f for d in folders if d.is_dir() for f in d.iterdir()
                  if f.is_file() and not f.name.startswith(".") and f not in read)


# --- task items --------------------------------------------------------------------------

def load_task_file(path: Path, source: str, loaded: Loaded) -> None:
    data = read_json(path)
    if isinstance(data, list) and not data:
        raise _fail(path, "-", "file", "empty: no items")
    items, problems = load_items(path, require_labels=True)
    loaded.raw_count += len(data) if isinstance(data, list) else 0
    loaded.notes += [str(p) for p in problems if p.severity == WARNING]
    loaded.records += [Record(source, it.id, item=it) for it in items]


# --- correction pairs ----------------------------------------------------------------------

def _pick(columns: list[str], names: list[str]) -> str | None:
    return next((n for n in names if n in columns), None)


def jsonl_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    """(row number, object) for each non-blank JSONL line; an error names the row."""
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(path, f"row {n}", "line", f"not valid JSON: {exc.msg}") from None
        if not isinstance(obj, dict):
            raise _fail(path, f"row {n}", "line", f"expected a JSON object, got {type(obj).__name__}")
        rows.append((n, obj))
    return rows


def load_correction_file(path: Path, source: str, loaded: Loaded, cfg: Correction) -> None:
    names_src = list(cfg.columns.source)
    names_dst = list(cfg.columns.corrected)
    instruction = cfg.instruction
    rows: list[tuple[int, dict]] = []
    text = _read_text(path)
    if not text.strip():
        raise _fail(path, "-", "file", "empty file")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        header = reader.fieldnames or []
        for col, names in (("source", names_src), ("corrected", names_dst)):
            if _pick(header, names) is None:
                raise _fail(path, "row 0 (header)", col, f"no {col} column: need one of {names}; the header has {header}")
        rows = [(n, r) for n, r in enumerate(reader, start=1)]
        if not rows:
            raise _fail(path, "-", "file", "empty: a header and no rows")
    else:
        rows = jsonl_rows(path, text)
    for n, obj in rows:
        src_col, dst_col = _pick(list(obj), names_src), _pick(list(obj), names_dst)
        for col, found, names in (("source", src_col, names_src), ("corrected", dst_col, names_dst)):
            if found is None:
                raise _fail(path, f"row {n}", col, f"missing: need one of {names}; the row has {sorted(obj)}")
        src, dst = obj[src_col], obj[dst_col]
        for col, value in ((src_col, src), (dst_col, dst)):
            if value is not None and not isinstance(value, (str, int, float)):
                raise _fail(path, f"row {n}", col, f"expected text, got {type(value).__name__}")
        rid = f"{path.name}:row {n}"
        loaded.raw_count += 1
        src, dst = ("" if src is None else str(src)).strip(), ("" if dst is None else str(dst)).strip()
        if not src or not dst:
            loaded.dropped.append((rid, f"empty {src_col if not src else dst_col}"))
            continue
        loaded.records.append(Record(source, rid, row={"instruction": instruction, "input": src, "output": dst}))


def _read_text(path: Path) -> str:
    try:
        return read_input_bytes(path, MAX_SOURCE_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise _fail(path, "-", "file", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except InputFileError as exc:
        raise _fail(path, "-", "file", exc.reason) from None


# --- Magpie-style instruction data -----------------------------------------------------------

HUMAN = ("human", "user")
ASSISTANT = ("gpt", "assistant", "model")


def _turns(conv: Any, path: Path, n: int) -> tuple[str, str]:
    """First user turn and the assistant turn that answers it."""
    if not isinstance(conv, list) or not conv:
        raise _fail(path, f"row {n}", "conversations", "expected a non-empty list of turns")
    turns = []
    for t, turn in enumerate(conv):
        if not isinstance(turn, dict):
            raise _fail(path, f"row {n}", f"conversations[{t}]", "expected an object with from/value or role/content")
        who = turn.get("from", turn.get("role"))
        what = turn.get("value", turn.get("content"))
        if not isinstance(who, str) or not isinstance(what, (str, type(None))):
            raise _fail(path, f"row {n}", f"conversations[{t}]", "expected from/value or role/content strings")
        turns.append((who.lower(), what or ""))
    for t in range(len(turns) - 1):
        if turns[t][0] in HUMAN and turns[t + 1][0] in ASSISTANT:
            return turns[t][1], turns[t + 1][1]
    return "", ""


def _read_dataset(path: Path):
    import datasets

    datasets.disable_progress_bars()
    with tempfile.TemporaryDirectory(prefix="maerak-ds-") as cache:
        try:
            if path.suffix.lower() == ".parquet":
                return datasets.Dataset.from_parquet(str(path), cache_dir=cache, keep_in_memory=True)
            return datasets.Dataset.from_json(str(path), cache_dir=cache, keep_in_memory=True)
        except Exception as exc:  # pyarrow / datasets raise many types for a bad file
            raise _fail(path, "-", "file", f"unreadable as {path.suffix.lstrip('.') or 'data'}: {type(exc).__name__}: {str(exc)[:300]}") from None


def load_magpie_file(path: Path, source: str, loaded: Loaded, cfg: Magpie) -> None:
    if path.suffix.lower() != ".parquet":
        text = _read_text(path)
        if not text.strip():
            raise _fail(path, "-", "file", "empty file")
        jsonl_rows(path, text)  # row numbers for JSON errors before `datasets` reads it
    elif path.stat().st_size == 0:
        raise _fail(path, "-", "file", "empty file")
    ds = _read_dataset(path)
    if len(ds) == 0:
        raise _fail(path, "-", "file", "empty: no rows")
    cols = ds.column_names
    ins_col = _pick(cols, list(cfg.columns.instruction))
    res_col = _pick(cols, list(cfg.columns.response))
    if "conversations" not in cols and (ins_col is None or res_col is None):
        raise _fail(path, "row 1", "columns", f"need `conversations` or instruction/response columns "
                    f"({list(cfg.columns.instruction)} / {list(cfg.columns.response)}); the file has {cols}")
    limit = cfg.max_rows
    for n, obj in enumerate(ds, start=1):
        if limit is not None and n > int(limit):
            loaded.notes.append(f"{path.name}: read the first {limit} rows (magpie.max_rows)")
            break
        if "conversations" in cols and obj.get("conversations") is not None:
            q, a = _turns(obj["conversations"], path, n)
        else:
            q, a = obj.get(ins_col), obj.get(res_col)
            for col, value in ((ins_col, q), (res_col, a)):
                if value is not None and not isinstance(value, str):
                    raise _fail(path, f"row {n}", col, f"expected text, got {type(value).__name__}")
        rid = f"{path.name}:row {n}"
        loaded.raw_count += 1
        q, a = (q or "").strip(), (a or "").strip()
        if not q or not a:
            loaded.dropped.append((rid, "empty instruction" if not q else "empty response"))
            continue
        loaded.records.append(Record(source, rid, row={"instruction": q, "input": "", "output": a}))


# --- dispatch -------------------------------------------------------------------------------

def missing_problem(spec: Source, root: Path, fmt: dict[str, str]) -> Problem:
    """The line for a required source whose patterns match no file."""
    paths = list(spec.paths)
    where = ", ".join(p.format(**fmt) for p in paths)
    dirs = [p for p in paths if (root / p.format(**fmt)).is_dir()]
    why = "is a directory, not a file" if dirs else "no such file"
    return Problem(where, "-", "file", f"source {spec.name!r}: {why}")


def missing_required(cfg: SourcesConfig, root: Path, fmt: dict[str, str]) -> list[Problem]:
    """A line per required source with no file: checked first, before a tokenizer or teacher is
    loaded (the competition's comes from the hub), so a missing train file is named at once."""
    return [missing_problem(spec, root, fmt) for spec in cfg.sources
            if spec.required and not resolve_paths(list(spec.paths), root, fmt)]


def load_source(spec: Source, root: Path, fmt: dict[str, str], cfg: SourcesConfig) -> Loaded:
    name, kind, paths = spec.name, spec.kind, list(spec.paths)
    loaded = Loaded(name=name, kind=kind, stages=spec.stages)
    loaded.files = resolve_paths(paths, root, fmt)
    loaded.notes += [f"{f}: not read: source {name!r} reads only {', '.join(Path(p).name for p in paths)}"
                     for f in unread_files(paths, root, fmt)]
    if not loaded.files:
        if spec.required:
            raise DataError([missing_problem(spec, root, fmt)])
        loaded.notes.append(f"no files match {paths}: source skipped")
        return loaded
    for path in loaded.files:
        if kind in TASK_KINDS:
            load_task_file(path, name, loaded)
        elif kind == "correction":
            load_correction_file(path, name, loaded, cfg.correction)
        else:  # magpie (the kinds were checked when the config was read)
            load_magpie_file(path, name, loaded, cfg.magpie)
    return loaded
