"""Progress lines for the long steps (tokenize, train, score): done/total, rate, time left.

One tqdm bar that redraws in place on a terminal; in a log file (stderr not a TTY) the same
bar as plain lines, one every `LOG_EVERY` seconds and the last, instead of a single line of
carriage returns. `relay` does the same for a child process's output (Axolotl's training
bar comes from transformers' ProgressCallback, a tqdm in the child that writes '\\r' redraws).
"""
from __future__ import annotations

import codecs
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from typing import IO, Any

LOG_EVERY = 30.0  # seconds between plain progress lines in a log file


class Lines:
    """A file for tqdm that turns each redraw ('\\r' + text) into one plain line."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def write(self, s: str) -> None:
        text = s.replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def is_tty(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def bar(iterable: Iterable | None = None, *, total: int | None = None, desc: str, unit: str = "it",
        enabled: bool = True, stream: IO[str] | None = None) -> Any:
    """A tqdm bar on stderr: redrawn on a terminal, plain lines every LOG_EVERY s elsewhere."""
    from tqdm import tqdm

    stream = stream or sys.stderr
    tty = is_tty(stream)
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=tty,
                file=stream if tty else Lines(stream), mininterval=0.5 if tty else LOG_EVERY,
                ascii=not tty, ncols=None if tty else 100)


_SEGMENT = re.compile(r"[^\r\n]*(?:\r\n|\n|\r)")


def relay(fd: int, out: IO[str], on_line: Callable[[str], None], tty: bool | None = None,
          every: float = LOG_EVERY) -> None:
    """Copy a child's output from `fd` to `out` until EOF. Lines ending in '\\n' pass as they are
    (and go to `on_line`); '\\r' redraws pass as they are on a terminal, and in a log file become
    plain lines, at most one per `every` seconds (the bar's final state ends in '\\n' and always shows)."""
    tty = is_tty(out) if tty is None else tty
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending, last = "", float("-inf")
    while True:
        chunk = os.read(fd, 65536)
        text = decoder.decode(chunk, final=not chunk)
        if tty:
            out.write(text)  # the terminal draws the redraws itself
        pending += text
        pos = 0
        for m in _SEGMENT.finditer(pending):
            seg = m.group()
            pos = m.end()
            if seg.endswith("\n"):
                line = seg.rstrip("\r\n")
                if not tty:
                    out.write(line + "\n")
                on_line(line)
            elif tty:
                pass
            elif time.monotonic() - last >= every and seg.strip():
                out.write(seg.strip() + "\n")
                last = time.monotonic()
        pending = pending[pos:]
        out.flush()
        if not chunk:
            break
    if pending:
        if not tty:
            out.write(pending + "\n")
        on_line(pending)
        out.flush()
