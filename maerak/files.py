"""File edges: atomic writes, hashes and config reads. A reader never sees a half-written output."""
from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from maerak.errors import ConfigError, InputFileError, MaerakError

# Caps on what one read takes into memory. Every input is read whole and parsed, so the cap stops a
# wrong path (a disk image, a 20 GB log) before it exhausts memory rather than after. Competition
# item files are 1-5 MB (the official train file: 758 items); 256 MiB is 50x the largest with room
# for the 50 MB hostile-corpus file, and json.loads needs ~10x the bytes in memory (2.5 GiB at the cap).
MAX_JSON_BYTES = 256 << 20
MAX_YAML_BYTES = 1 << 20  # configs are a few KB; PyYAML parses ~1 MB/s, so a bigger "config" is a wrong file
MAX_SOURCE_BYTES = 4 << 30  # JSONL/CSV source files (Magpie's 200K pairs are ~1 GB)

_KINDS = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a named pipe (FIFO)"),
          (stat.S_ISSOCK, "a socket"))


def _size(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB" if n >= 1 << 20 else f"{n:,} bytes"


def read_input_bytes(path: str | Path, limit: int = MAX_JSON_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, or InputFileError naming it. A device
    (/dev/zero never ends), a FIFO (blocks until a writer comes) or a directory is refused before a
    byte is read: the file is opened non-blocking and checked on the open descriptor (fstat), so it
    cannot be swapped between the check and the read."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        raise InputFileError(path, "no such file") from None
    except IsADirectoryError:
        raise InputFileError(path, "is a directory, not a file") from None
    except OSError as exc:
        raise InputFileError(path, f"unreadable: {exc.strerror}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        if stat.S_ISDIR(st.st_mode):
            raise InputFileError(path, "is a directory, not a file")
        kind = next((name for test, name in _KINDS if test(st.st_mode)), "not a regular file")
        raise InputFileError(path, f"is {kind}, not a regular file")
    with os.fdopen(fd, "rb") as fh:
        too_big = f"over the {_size(limit)} cap on one input file: not a file this step reads"
        if st.st_size > limit:
            raise InputFileError(path, f"{_size(st.st_size)}, {too_big}")
        try:
            os.set_blocking(fd, True)
            data = fh.read(limit + 1)
        except OSError as exc:
            raise InputFileError(path, f"unreadable: {exc.strerror}") from None
        if len(data) > limit:  # it grew since fstat
            raise InputFileError(path, f"more than {_size(limit)}, {too_big}")
    return data


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently,
    so a second `learning_rate:` further down would quietly win)."""

    def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor`: its keys may be overridden here
                continue
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"key {key!r} given twice (lines {seen[key]} and {line}); keep one", key_node.start_mark)
                seen[key] = line
            except TypeError:  # an unhashable key: PyYAML's own check reports it
                pass
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str | bytes) -> Any:
    """YAML text as data (safe types only; a duplicate key is a yaml.YAMLError)."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_yaml(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML file that must hold a mapping (a stage config, the profiles)."""
    path = Path(path)
    try:
        data = read_input_bytes(path, MAX_YAML_BYTES)
    except InputFileError as exc:
        raise ConfigError(f"{path}: {'no such ' + what if exc.reason == 'no such file' else exc.reason}") from None
    try:
        cfg = parse_yaml(data.decode("utf-8-sig"))
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
    if os.statvfs(parent).f_flag & os.ST_RDONLY:
        return f"{path}: {parent} is on a read-only file system"
    if not os.access(parent, os.W_OK | os.X_OK):
        return f"{path}: no permission to write in {parent}"
    return None


def write_failure(path: str | Path, exc: OSError) -> MaerakError:
    """An OSError while writing outputs as the one line a user sees (a full disk, a read-only
    mount, a quota, a path through a file)."""
    what = {errno.ENOSPC: "no space left on the device (disk full)", errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system", errno.EACCES: "no permission", errno.EPERM: "not permitted",
            errno.ENOTDIR: "a part of the path is a file, not a directory",
            errno.EISDIR: "is a directory, not a file"}.get(exc.errno or 0, exc.strerror or str(exc))
    return MaerakError(f"{path}: cannot write: {what}; nothing written (the previous outputs are unchanged)")


def write_together(files: dict[Path, bytes], staging_in: str | Path) -> None:
    """Several outputs of one step, landing together or not at all: each is written and fsynced
    into a temporary folder made in `staging_in` (a folder on the destinations' file system, so
    the moves are renames), and only when all are written are they moved into place. A full disk
    fails while writing the temporary folder, before any destination is touched; a rename
    allocates no data. Any OSError is one MaerakError line (`write_failure`)."""
    for path in files:
        if problem := output_problem(path):
            raise MaerakError(problem)
    staging_in = Path(staging_in)
    current = next(iter(files), staging_in)
    tmp: Path | None = None
    try:
        staging_in.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=staging_in, prefix=".writing-"))
        staged = []
        for n, (path, data) in enumerate(files.items()):
            current = path
            part = tmp / f"{n}-{path.name}"
            with open(part, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fchmod(fh.fileno(), target_mode(path))
                os.fsync(fh.fileno())
            staged.append((part, path))
        for _, path in staged:
            current = path
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a directory", str(path))
        for part, path in staged:
            current = path
            os.replace(part, path)
    except OSError as exc:
        raise write_failure(current, exc) from None
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


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
    """Stable JSON: UTF-8 Hangul (no \\u escapes), fixed indent, trailing newline. NaN and infinities
    are refused (ValueError): they are not JSON, and every writer here goes through this or `dumps_line`."""
    return json.dumps(obj, ensure_ascii=False, indent=2, allow_nan=False) + "\n"


def dumps_line(obj: Any) -> str:
    """One JSONL line, NaN refused as in `dumps_json`."""
    return json.dumps(obj, ensure_ascii=False, allow_nan=False) + "\n"


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, dumps_json(obj))


def jsonl_bytes(rows: Iterable[dict]) -> bytes:
    return "".join(dumps_line(r) for r in rows).encode("utf-8")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict]) -> Path:
    return atomic_write_bytes(path, jsonl_bytes(rows))


def read_jsonl(path: str | Path) -> list[dict]:
    with open(path, encoding="utf-8-sig") as fh:
        return [json.loads(line) for line in fh if line.strip()]


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
    lines = [dumps_line(r) for r in rows]
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
