"""File edges: atomic writes, hashes and config reads. A reader never sees a half-written output."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from maerak.errors import ConfigError


def load_yaml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML file that must hold a mapping (a stage config, the profiles)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such {what}")
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not readable YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: expected a YAML mapping")
    return cfg


def rel_path(path: str | Path, root: str | Path) -> str:
    """`path` as messages, reports and the manifest write it: relative to `root` when inside it
    (as written, else after resolving symlinks and ..), otherwise as given (a model elsewhere)."""
    path, root = Path(path), Path(root)
    for p, r in ((path, root), (path.resolve(), root.resolve())):
        if p.is_relative_to(r):
            return p.relative_to(r).as_posix()
    return str(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def target_mode(path: Path) -> int:
    """The mode a plain open(path, "w") would leave: a replaced file keeps its mode, a new one
    gets 0666 minus the umask (mkstemp alone would make every output owner-only)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_umask()


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a directory, not a file", str(path))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fchmod(fh.fileno(), target_mode(path))
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def output_problem(path: str | Path) -> str | None:
    """Why `path` cannot be written as a file, checked before the work that produces it starts
    (an existing directory, a parent that is a file, a folder we may not write in); None when it can."""
    path = Path(path)
    if path.is_dir():
        return f"{path}: is a directory; give a file name"
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return f"{path}: {parent} is a file, not a directory"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path}: no permission to write in {parent}"
    return None


def same_file(a: str | Path, b: str | Path) -> bool:
    """True when two paths name one file (symlinks and ./ resolved), whether or not it exists yet."""
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any) -> str:
    """Stable JSON: UTF-8 Hangul (no \\u escapes), fixed indent, trailing newline."""
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj))


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8-sig") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> dict[str, str]:
    """sha256 of every file under a directory (or of the file itself), by relative path."""
    path = Path(path)
    if path.is_file():
        return {path.name: sha256_file(path)}
    return {
        str(p.relative_to(path)): sha256_file(p)
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def read_keyed_jsonl(path: str | Path, key: str = "key") -> dict[str, dict]:
    """Rows of an append-only JSONL cache by their `key` field. A torn line (an interrupted
    write) is skipped: the work it stood for is simply done again."""
    path = Path(path)
    rows: dict[str, dict] = {}
    if not path.exists():
        return rows
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                row = json.loads(line)
                rows[row[key]] = row
            except (ValueError, KeyError, TypeError):
                continue
    return rows


def append_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """Append rows durably. If the file ends in a torn line, it is ended first so the new
    rows are not glued onto it."""
    lines = [json.dumps(r, ensure_ascii=False) + "\n" for r in rows]
    if not lines:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell():
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                lines.insert(0, "\n")
        fh.write("".join(lines).encode("utf-8"))
        fh.flush()
        os.fsync(fh.fileno())
