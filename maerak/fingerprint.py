"""The one content fingerprint: sha256 of every file, and digests built from them.

Everything that asks "is this the same data / the same model?" asks here: the step stamps
(maerak/stamps.py), the score-cache identity (inference/caching.py), the resume key
(training/resume.py), the Axolotl dataset cache (training/axolotl_run.py), the distill and
Magpie caches, the manifest and verify. A file is identified by its bytes, never by its name,
size or mtime alone.

Hashing an 18 GB checkpoint on every re-run would cost minutes, so each file's sha256 is
remembered in a memo (MEMO, a JSON file outside the repository) keyed by the file's
(device, inode, size, mtime_ns, ctime_ns). Any change of that key hashes again. ctime is in it
because `cp -p`, `rsync -a`, `tar -x` and `touch -d` set mtime back but cannot set ctime: the
kernel stamps ctime itself on every write, chmod or rename of the inode. A file whose
timestamps are within RACY seconds of now is not memoized (as git's "racy" index entries):
a write in the same timestamp tick after hashing would otherwise keep its key.
"""
from __future__ import annotations

import atexit
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
RACY = 2.0
MEMO_LIMIT = 20000  # entries kept; the oldest are dropped first
_memo: dict[str, str] | None = None
_memo_dirty = False


def memo_path() -> Path:
    """$MAERAK_FINGERPRINT_MEMO, else $XDG_CACHE_HOME/maerak/fingerprints.json (~/.cache by default)."""
    env = os.environ.get("MAERAK_FINGERPRINT_MEMO")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "maerak" / "fingerprints.json"


def _key(st: os.stat_result) -> str:
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _load_memo() -> dict[str, str]:
    global _memo
    if _memo is None:
        try:
            data = json.loads(memo_path().read_text(encoding="utf-8"))
            _memo = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        except (OSError, ValueError):
            _memo = {}
    return _memo


def save_memo() -> None:
    """Write the memo (atomically; an unwritable cache folder only costs speed on the next run)."""
    global _memo_dirty
    if not _memo_dirty or _memo is None:
        return
    path = memo_path()
    rows = dict(list(_memo.items())[-MEMO_LIMIT:])
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fingerprints.")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(rows, fh)
        os.replace(tmp, path)
        _memo_dirty = False
    except OSError:
        pass


atexit.register(save_memo)


def forget() -> None:
    """Drop the in-process memo (tests; the file on disk stays)."""
    global _memo, _memo_dirty
    _memo, _memo_dirty = None, False


def _hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, memoized by (device, inode, size, mtime_ns, ctime_ns)."""
    global _memo_dirty
    path = Path(path)
    before = path.stat()
    key = _key(before)
    memo = _load_memo()
    if key in memo:
        return memo[key]
    digest = _hash(path)
    after = path.stat()
    now = time.time()
    settled = max(after.st_mtime_ns, after.st_ctime_ns) / 1e9 < now - RACY
    if _key(after) == key and settled:  # unchanged while it was read, and not written within the last tick
        memo.pop(key, None)
        memo[key] = digest
        _memo_dirty = True
        if len(memo) % 64 == 0:
            save_memo()
    return digest


def files(path: Path, hidden: bool = True) -> list[Path]:
    """The files under `path` (itself, if a file), sorted; dotfiles left out with hidden=False."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.rglob("*")
                  if p.is_file() and (hidden or not any(part.startswith(".") for part in p.relative_to(path).parts)))


def tree(path: str | Path, hidden: bool = False) -> dict[str, str]:
    """sha256 of every file under a folder by relative path (a single file: by its name)."""
    path = Path(path)
    if path.is_file():
        return {path.name: file_sha256(path)}
    out = {p.relative_to(path).as_posix(): file_sha256(p) for p in files(path, hidden)}
    save_memo()
    return out


def paths_digest(paths: Iterable[Path], extra: Iterable[str] = (), exclude_names: tuple[str, ...] = ()) -> str:
    """One sha256 over `extra` strings and every file under `paths` (path + content); a missing
    path is part of it as such, so creating it changes the digest."""
    h = hashlib.sha256()
    for text in extra:
        h.update(f"extra\0{text}\n".encode())
    for path in paths:
        found = [f for f in files(Path(path)) if f.name not in exclude_names]
        if not found:
            h.update(f"absent\0{path}\n".encode())
        for f in found:
            h.update(f"{f}\0{file_sha256(f)}\n".encode())
    save_memo()
    return h.hexdigest()


def model_digest(model_dir: str | Path) -> str:
    """A checkpoint's identity: every non-hidden file's relative path and sha256. Where the folder
    lies does not matter; one changed byte of any weight, config or tokenizer file does."""
    h = hashlib.sha256()
    for rel, digest in tree(model_dir).items():
        h.update(f"{rel}\0{digest}\n".encode())
    return h.hexdigest()


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- the environment
def device() -> str:
    """The accelerator the numbers are computed on: each CUDA device's name and capability, or the CPU.
    Asked of nvidia-smi where there is one, so the asking process (reproduce, which then launches
    the training subprocesses) holds no CUDA context of its own."""
    smi = shutil.which("nvidia-smi")
    if smi and os.environ.get("CUDA_VISIBLE_DEVICES", "x") not in ("", "-1"):
        try:
            out = subprocess.run([smi, "--query-gpu=name,compute_cap", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=30, check=True).stdout.strip()
            if out:
                return "cuda: " + ", ".join(line.strip() for line in out.splitlines())
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        import torch

        if torch.cuda.is_available():
            names = []
            for i in range(torch.cuda.device_count()):
                major, minor = torch.cuda.get_device_capability(i)
                names.append(f"{torch.cuda.get_device_name(i)} sm_{major}{minor}")
            return "cuda: " + ", ".join(names)
    except (ImportError, RuntimeError):
        pass
    return f"cpu: {cpu_model()} ({platform.machine()})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def environment(root: Path) -> dict[str, Any]:
    """What every step's numbers depend on besides its inputs and code: the lock file's content,
    Python, torch (installed outside the lock, by the host's CUDA), its CUDA build and the device.
    Lane notes: a run-time choice that changes numbers (e.g. a CPU dtype picked by measurement)
    belongs in here, as one more key."""
    try:
        import torch

        torch_version, cuda = torch.__version__, torch.version.cuda
    except ImportError:
        torch_version, cuda = None, None
    lock = root / "requirements.lock"
    return {
        "lock": file_sha256(lock) if lock.is_file() else None,
        "python": platform.python_version(),
        "torch": torch_version,
        "cuda": cuda,
        "device": device(),
    }


def environment_digest(root: Path) -> str:
    return text_digest(json.dumps(environment(root), sort_keys=True))
