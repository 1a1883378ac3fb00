"""One run per output folder at a time: `with output_lock(folder, "prepare"): ...`.

Two runs writing one profile's outputs at once interleave (the last writer wins, the score cache
gets every row twice). The lock is a file created with O_EXCL in the folder, naming its holder
(verb, pid, host, start time) so the refusal says who holds it. A lock left by a process that no
longer runs on this host (SIGKILL, power loss) is stale and taken over with a note; one from
another host cannot be checked from here and is refused, naming the file to remove.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from maerak.errors import MaerakError

LOCK_NAME = ".maerak.lock"  # in the output folder itself, never inside a hashed checkpoint or eval folder
_HELD: dict[str, int] = {}  # lock path -> nesting depth in this process (reproduce runs verbs in-process)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    return True


def _holder(path: Path) -> dict:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}  # being written this instant, or torn: treated as held by an unknown process


def _describe(h: dict) -> str:
    return f"{h.get('verb', '?')} (pid {h.get('pid', '?')} on {h.get('host', '?')}, since {h.get('started', '?')})"


def _create(path: Path, verb: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump({"verb": verb, "pid": os.getpid(), "host": socket.gethostname(),
                   "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, fh)


def acquire(folder: Path, verb: str) -> Path:
    """Take the lock of `folder` (which must exist) for `verb`, or raise MaerakError naming its holder."""
    path = folder / LOCK_NAME
    for _ in range(3):  # a stale lock removed by a racing run: try again
        try:
            _create(path, verb)
            return path
        except FileExistsError:
            pass
        holder = _holder(path)
        pid, host = holder.get("pid"), holder.get("host")
        here = host == socket.gethostname()
        if here and pid == os.getpid():
            return path  # this process holds it already (a verb run inside reproduce)
        if here and isinstance(pid, int) and not _alive(pid):
            if _holder(path) == holder:  # still the dead one's (not a lock a racing run just took)
                print(f"note: {path}: taking over a stale lock of {_describe(holder)}: that process is gone", file=sys.stderr)
                try:
                    path.unlink()
                except FileNotFoundError:
                    pass
            continue
        advice = ("wait for it to end" if here else
                  f"wait for it to end; if it is gone (another host: cannot be checked from here), remove {path}")
        raise MaerakError(f"{folder}: in use by {_describe(holder) if holder else 'another run'} (lock {path}); {advice}")
    raise MaerakError(f"{path}: could not take the lock (other runs keep taking it)")


@contextmanager
def output_lock(folder: str | Path, verb: str) -> Iterator[None]:
    """Hold `folder`'s lock while the block runs; the folder is made if missing and removed again
    if it is still empty afterwards (a refused or failed run leaves no folder behind)."""
    folder = Path(folder)
    made = []  # the folders this call creates, deepest first: removed again if left empty
    p = folder
    while not p.exists() and p != p.parent:
        made.append(p)
        p = p.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise MaerakError(f"{folder}: cannot create the output folder: {exc.strerror}") from None
    key = str((folder / LOCK_NAME).absolute())
    try:
        if key not in _HELD:
            try:
                acquire(folder, verb)
            except OSError as exc:
                if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT):
                    raise MaerakError(f"{folder}: cannot write the lock file: {exc.strerror}") from None
                raise
        _HELD[key] = _HELD.get(key, 0) + 1
        try:
            yield
        finally:
            _HELD[key] -= 1
            if not _HELD[key]:
                del _HELD[key]
                try:
                    (folder / LOCK_NAME).unlink()
                except FileNotFoundError:
                    pass
    finally:
        for p in made:
            try:
                p.rmdir()  # only when empty
            except OSError:
                break
