"""Progress lines (maerak/progress.py): redrawn on a terminal, plain lines in a log file."""
from __future__ import annotations

import io
import os
import threading

from maerak import progress

# What a child's tqdm writes: redraws with '\r', the final state ending in '\n', log lines between.
CHILD = (b"loading\n\r  0%|          | 0/3\r 33%|###3      | 1/3 [00:02<00:04, 2.0s/it]"
         b"\r 67%|######6   | 2/3 [00:04<00:02, 2.0s/it]\r100%|##########| 3/3 [00:06<00:00, 2.0s/it]\n"
         b"{'loss': 1.5}\nTraceback ...\nValueError: bad\n")


def _relay(data: bytes, tty: bool, every: float) -> tuple[str, list[str]]:
    r, w = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(w, data[:50]), os.write(w, data[50:]), os.close(w)))
    writer.start()
    out, lines = io.StringIO(), []
    progress.relay(r, out, lines.append, tty=tty, every=every)
    writer.join()
    os.close(r)
    return out.getvalue(), lines


def test_a_log_file_gets_plain_lines_at_most_one_redraw_per_interval_and_the_final_state():
    text, lines = _relay(CHILD, tty=False, every=3600)
    assert "\r" not in text
    assert text.splitlines() == ["loading", "0%|          | 0/3",
                                 "100%|##########| 3/3 [00:06<00:00, 2.0s/it]", "{'loss': 1.5}",
                                 "Traceback ...", "ValueError: bad"]
    assert lines[-1] == "ValueError: bad" and "loading" in lines  # the tail a failure quotes
    text, _ = _relay(CHILD, tty=False, every=0)
    assert "1/3 [00:02<00:04, 2.0s/it]" in text.splitlines()[2]


def test_a_terminal_gets_the_bytes_as_they_are_so_the_bar_redraws_in_place():
    text, lines = _relay(CHILD, tty=True, every=3600)
    assert text == CHILD.decode()
    assert lines[-1] == "ValueError: bad"


def test_bar_in_a_log_file_writes_plain_lines_with_count_rate_and_time_left():
    log = io.StringIO()
    b = progress.bar(total=4, desc="score", unit="req", stream=log)
    for _ in range(4):
        b.update(1)
    b.close()
    text = log.getvalue()
    assert "\r" not in text and text.endswith("\n")
    last = text.splitlines()[-1]
    assert last.startswith("score: 100%") and "4/4" in last and "req/s" in last


def test_bar_disabled_writes_nothing():
    log = io.StringIO()
    b = progress.bar(range(3), desc="x", enabled=False, stream=log)
    assert list(b) == [0, 1, 2] and log.getvalue() == ""
