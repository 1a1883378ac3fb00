"""Loaded by every Python process whose PYTHONPATH names this folder (tests/test_open_audit.py):
with MAERAK_OPEN_LOG set, it records each file the process opens for reading (Python's audit
hook on "open": builtins.open, io.open_code for imports, os.open) to MAERAK_OPEN_LOG.<pid>.
Subprocesses (Axolotl, accelerate) inherit the variable and record too; forked workers write to
their parent's file."""
import os
import sys

_LOG = os.environ.get("MAERAK_OPEN_LOG")
if _LOG:
    _fh = open(f"{_LOG}.{os.getpid()}", "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (open for the process)
    _WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def _hook(event, args):
        if event != "open":
            return
        path, mode, flags = (tuple(args) + (None, None))[:3]
        if isinstance(path, int) or path is None:
            return
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            return
        if isinstance(flags, int) and flags & _WRITE:
            return
        try:
            _fh.write(os.path.abspath(os.fsdecode(path)) + "\n")
        except (ValueError, OSError):
            pass

    sys.addaudithook(_hook)
