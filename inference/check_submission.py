"""`./run.sh check-submission --submission FILE --test FILE`: is this a valid submission?

A JSON array, UTF-8 without a BOM and without `\\uXXXX` escapes for Hangul, the
same ids in the same order as the test file, every `output` one of
inference_1..3, and every other field equal to the test file's. Each failure is
printed as `FILE: ITEM ID: FIELD: problem`; the exit status is non-zero.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from maerak.schema import LABELS, DataError, Problem, decode_json, read_file_bytes, read_json, show_value

ESCAPE = re.compile(rb"(?<!\\)((?:\\\\)*)\\u([0-9a-fA-F]{4})")
ID_KEY = re.compile(rb'"id"\s*:\s*"((?:[^"\\]|\\.)*)"')


def is_hangul(code: int) -> bool:
    return (0xAC00 <= code <= 0xD7A3 or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F
            or 0xA960 <= code <= 0xA97F or 0xD7B0 <= code <= 0xD7FF)


def _id_locator(data: bytes):
    """A function offset -> id of the item whose text holds that byte
    (the last `"id": "..."` that starts before it)."""
    import bisect

    starts, ids = [], []
    for m in ID_KEY.finditer(data):
        starts.append(m.start())
        try:
            ids.append(json.loads(b'"' + m.group(1) + b'"'))
        except ValueError:
            ids.append(m.group(1).decode("utf-8", "replace"))

    def locate(offset: int) -> str:
        k = bisect.bisect_right(starts, offset) - 1
        return ids[k] if k >= 0 else "-"

    return locate


def check_bytes(data: bytes, name: str) -> list[Problem]:
    """Encoding checks on the file's bytes."""
    problems = []
    if data.startswith(b"\xef\xbb\xbf"):
        problems.append(Problem(name, "-", "file", "starts with a UTF-8 BOM"))
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return problems + [Problem(name, "-", "file", f"not UTF-8 ({exc.reason} at byte {exc.start})")]
    seen: set[str] = set()
    locate = None
    for m in ESCAPE.finditer(data):
        if is_hangul(int(m.group(2), 16)):
            locate = locate or _id_locator(data)
            iid = locate(m.start())
            if iid not in seen:
                seen.add(iid)
                problems.append(Problem(name, iid, "encoding",
                                        f"Hangul written as an escape (\\u{m.group(2).decode()} at byte {m.start()}); "
                                        "write UTF-8 text (ensure_ascii=False)"))
    return problems


def _diff_fields(a: Any, b: Any, path: str) -> list[str]:
    """Dotted paths where a (submission) differs from b (test), ignoring nothing.
    A loop, not recursion: how deep a hostile file nests cannot crash it."""
    out: list[str] = []
    stack = [(a, b, path)]
    while stack:
        x, y, where = stack.pop()
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y), key=str, reverse=True):
                sub = f"{where}.{k}" if where else str(k)
                if k not in x:
                    out.append(f"{sub} (missing)")
                elif k not in y:
                    out.append(f"{sub} (not in the test file)")
                else:
                    stack.append((x[k], y[k], sub))
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            stack += [(u, v, f"{where}[{i}]") for i, (u, v) in reversed(list(enumerate(zip(x, y))))]
        elif type(x) is not type(y) or x != y:
            out.append(where or "item")
    return out


def _id_of(item: Any) -> str | None:
    """An item's id when it is a usable one (a string); ids of any other type count as missing."""
    iid = item.get("id") if isinstance(item, dict) else None
    return iid if isinstance(iid, str) else None


def check_submission_data(sub: Any, test: Any, sub_name: str, test_name: str,
                          data: bytes | None = None) -> list[Problem]:
    """All problems of decoded submission `sub` against decoded test `test`
    (plus encoding problems when the raw bytes `data` are given)."""
    problems = check_bytes(data, sub_name) if data is not None else []
    if not isinstance(sub, list):
        return problems + [Problem(sub_name, "-", "file", f"expected a JSON array, got {type(sub).__name__}")]
    if not isinstance(test, list):
        return problems + [Problem(test_name, "-", "file", f"expected a JSON array, got {type(test).__name__}")]
    if not test:
        return problems + [Problem(test_name, "-", "file", "an empty list: no items to check against")]
    if len(sub) != len(test):
        problems.append(Problem(sub_name, "-", "file", f"{len(sub)} items, but the test file has {len(test)}"))
    test_ids = [_id_of(t) for t in test]
    sub_ids = [_id_of(s) for s in sub]
    test_at: dict[str, int] = {}
    for n, iid in enumerate(test_ids):
        if iid is not None:
            test_at.setdefault(iid, n)
    sub_at: dict[str, int] = {}
    for n, iid in enumerate(sub_ids):
        if iid is not None:
            sub_at.setdefault(iid, n)
    for iid in test_at:
        if iid not in sub_at:
            problems.append(Problem(sub_name, iid, "id", "test item missing from the submission"))
    for n, s in enumerate(sub):
        where = f"item #{n}"
        if not isinstance(s, dict):
            problems.append(Problem(sub_name, where, "item", "not a JSON object"))
            continue
        iid = sub_ids[n]
        label = iid if iid is not None else where
        if iid is None:
            got = "missing" if "id" not in s else f"not a string: {show_value(s['id'])}"
            problems.append(Problem(sub_name, where, "id", got))
        elif iid not in test_at:
            problems.append(Problem(sub_name, label, "id", "not in the test file"))
        elif sub_at[iid] != n:
            problems.append(Problem(sub_name, label, "id", f"duplicate id (again at item #{n})"))
        elif n < len(test_ids) and test_ids[n] != iid:
            problems.append(Problem(sub_name, label, "id",
                                    f"at item #{n}, but the test file has {show_value(test_ids[n])} there (order differs)"))
        out = s.get("output")
        if not isinstance(out, str) or out not in LABELS:
            problems.append(Problem(sub_name, label, "output", f"{show_value(out)} is not one of {', '.join(LABELS)}"))
        if iid is not None and iid in test_at:
            t = test[test_at[iid]]
            a = {k: v for k, v in s.items() if k != "output"}
            b = {k: v for k, v in t.items() if k != "output"}
            for f in _diff_fields(a, b, ""):
                problems.append(Problem(sub_name, label, f, "differs from the test file"))
    return problems


def check_submission_file(submission: str | Path, test: str | Path) -> list[Problem]:
    sub_path, test_path = Path(submission), Path(test)
    try:
        test_data = read_json(test_path)
        data = read_file_bytes(sub_path)
    except DataError as exc:
        return exc.problems
    problems = check_bytes(data, str(sub_path))
    if any(p.field == "file" and p.message.startswith("not UTF-8") for p in problems):
        return problems
    try:
        sub = decode_json(data, str(sub_path))
    except DataError as exc:
        return exc.problems  # unreadable: the BOM line would only add noise
    return problems + check_submission_data(sub, test_data, str(sub_path), str(test_path))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="./run.sh check-submission", description=__doc__.splitlines()[0])
    p.add_argument("--submission", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True)
    args = p.parse_args(argv)
    problems = check_submission_file(args.submission, args.test)
    if problems:
        for prob in problems:
            print(prob)
        print(f"{args.submission}: INVALID ({len(problems)} problem(s))", file=sys.stderr)
        return 1
    n = len(read_json(args.test))  # read without a problem just above
    print(f"{args.submission}: OK ({n} items match {args.test})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
