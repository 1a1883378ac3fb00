"""The official item schema: parse, validate and normalise competition files.

Parsing is pure (`parse_items` takes decoded JSON and returns items plus
problems); `load_items` is the file edge. Every problem names the file, the
item id and the field, so a user can find it in a 1,000-item file.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maerak.errors import DataError, InputFileError  # DataError: the stages import it from here too
from maerak.files import read_input_bytes

CATEGORIES: tuple[str, ...] = ("원인", "후행사건", "전제", "동기", "반응")
LABELS: tuple[str, ...] = ("inference_1", "inference_2", "inference_3")
ERROR = "error"
WARNING = "warning"
SPEAKERS = (1, 2)
# Real utterances and options are at most a few hundred characters; a text this long is a
# broken or wrong file (an error, not a prompt to be cut silently at scoring time).
MAX_TEXT_CHARS = 20_000
MAX_DEPTH = 64
SURROGATE_ESCAPE = re.compile(r"\\[uU][dD][89a-fA-F]")


@dataclass(frozen=True)
class Problem:
    file: str
    item_id: str
    field: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        prefix = "" if self.severity == ERROR else "warning: "
        return f"{show_name(self.file)}: {show_name(self.item_id)}: {show_name(self.field)}: {prefix}{self.message}"


def show_name(name: str, limit: int = 120) -> str:
    """A file name or item id as it goes into a one-line message: as is when plain, else quoted
    with escapes, so a newline or ': ' inside an id cannot split or fake the `FILE: ID: FIELD` line."""
    name = str(name)
    short = name if len(name) <= limit else name[:limit] + "…"
    if short and short.isprintable() and ": " not in short and short == short.strip():
        return short
    return json.dumps(short)


def one_line(text: str) -> str:
    """`text` with each non-printable character (newline, CR, ESC, U+2028 ...) written as its
    escape (\\n, \\x1b): a line of a report built from user data (an id) stays one line."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def show_value(value: Any, limit: int = 60) -> str:
    """A user's value in a message, cut short: a 50 MB string or a deeply nested list stays one short line."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"




@dataclass(frozen=True)
class Utterance:
    speaker: int
    text: str
    ids: tuple[str, ...]


@dataclass(frozen=True)
class Item:
    id: str
    conversation: tuple[Utterance, ...]
    reference_ids: tuple[str, ...]
    category: str
    options: tuple[str, str, str]
    label: str | None  # "inference_N", or None for unlabeled (test) items
    raw: dict = field(compare=False, repr=False, hash=False)

    @property
    def label_index(self) -> int | None:
        return None if self.label is None else LABELS.index(self.label)

    @property
    def conversation_key(self) -> str:
        return conversation_key(self.conversation)


def conversation_key(conversation: Iterable[Utterance]) -> str:
    """Content hash of a conversation: items sharing it must stay in one split."""
    text = "\n".join(f"{u.speaker}\t{u.text}" for u in conversation)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _item_id(raw: Any, index: int) -> str:
    if isinstance(raw, dict) and isinstance(raw.get("id"), str) and raw["id"]:
        return raw["id"]
    return f"<item #{index}>"


def _is_id(value: Any) -> bool:
    """Utterance ids are strings in the files (integers tolerated); never objects, lists or booleans."""
    return isinstance(value, (str, int)) and not isinstance(value, bool)


def _parse_utterances(conv: Any, file: str, iid: str) -> tuple[list[Utterance], list[Problem]]:
    problems: list[Problem] = []
    utterances: list[Utterance] = []
    if not isinstance(conv, list) or not conv:
        return [], [Problem(file, iid, "input.conversation", "missing or not a non-empty list")]
    for j, u in enumerate(conv):
        where = f"input.conversation[{j}]"
        if not isinstance(u, dict):
            problems.append(Problem(file, iid, where, "not an object"))
            continue
        speaker = u.get("speaker")
        # Exactly the integers 1 and 2: the prompt renders 화자1/화자2, so "1" (text), 0, 3 or -5
        # would train and score a speaker the task never has.
        if type(speaker) is not int or speaker not in SPEAKERS:
            problems.append(Problem(file, iid, f"{where}.speaker", f"expected 1 or 2 (an integer), got {show_value(speaker)}"))
            continue
        text = u.get("utterance")
        # Real files carry integer utterances (e.g. a bare number typed in chat) and
        # empty ones; both are kept as text so that reference ids stay valid.
        if isinstance(text, (int, float)) and not isinstance(text, bool):
            text = str(text)
        elif text is None:
            text = ""
        if not isinstance(text, str):
            problems.append(Problem(file, iid, f"{where}.utterance", f"expected text, got {type(text).__name__}"))
            continue
        if len(text) > MAX_TEXT_CHARS:
            problems.append(Problem(file, iid, f"{where}.utterance", f"{len(text):,} characters; longer than any "
                                    f"real utterance (limit {MAX_TEXT_CHARS:,}): a broken or wrong file?"))
            continue
        uid = u.get("utterance_id")
        listed = uid if isinstance(uid, list) else ([] if uid is None else [uid])
        if not all(_is_id(x) for x in listed):
            problems.append(Problem(file, iid, f"{where}.utterance_id", f"expected an id or a list of ids, got {show_value(uid)}"))
            continue
        ids = tuple(str(x) for x in listed)
        if not ids:
            problems.append(Problem(file, iid, f"{where}.utterance_id", "missing"))
            continue
        utterances.append(Utterance(speaker=speaker, text=text, ids=ids))
    return utterances, problems


def parse_item(raw: Any, file: str, index: int) -> tuple[Item | None, list[Problem]]:
    """Parse one raw item; returns (item or None, problems including warnings)."""
    iid = _item_id(raw, index)
    if not isinstance(raw, dict):
        return None, [Problem(file, iid, "item", "not a JSON object")]
    problems: list[Problem] = []
    if not isinstance(raw.get("id"), str) or not raw.get("id"):
        problems.append(Problem(file, iid, "id", "missing or not a string"))
    inp = raw.get("input")
    if not isinstance(inp, dict):
        return None, problems + [Problem(file, iid, "input", "missing or not an object")]
    utterances, conv_problems = _parse_utterances(inp.get("conversation"), file, iid)
    problems += conv_problems
    category = inp.get("category")
    if category is None:
        problems.append(Problem(file, iid, "input.category", "missing"))
    elif category not in CATEGORIES:
        problems.append(Problem(file, iid, "input.category", f"unknown category {show_value(category)}; expected one of {', '.join(CATEGORIES)}"))
    options = []
    for key in LABELS:
        value = inp.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(file, iid, f"input.{key}", "missing or empty option"))
        elif len(value) > MAX_TEXT_CHARS:
            problems.append(Problem(file, iid, f"input.{key}", f"{len(value):,} characters (limit {MAX_TEXT_CHARS:,})"))
        options.append(value if isinstance(value, str) else "")
    if all(isinstance(o, str) and o.strip() for o in options) and len({" ".join(o.split()) for o in options}) == 1:
        problems.append(Problem(file, iid, "input.inference_2", "inference_1, inference_2 and inference_3 are the same "
                                "text: nothing to choose between"))
    refs = inp.get("reference_id", [])
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list) or not all(_is_id(r) for r in refs):
        problems.append(Problem(file, iid, "input.reference_id", "expected a list of utterance ids"))
        refs = []
    known = {i for u in utterances for i in u.ids}
    for ref in refs:
        if str(ref) not in known:
            problems.append(Problem(file, iid, "input.reference_id", f"{show_value(ref)} points at no utterance", WARNING))
    output = raw.get("output")
    label: str | None
    if output in (None, ""):
        label = None
    elif output in LABELS:
        label = output
    else:
        label = None
        problems.append(Problem(file, iid, "output", f"unknown label {show_value(output)}; expected one of {', '.join(LABELS)} or \"\""))
    if any(p.severity == ERROR for p in problems):
        return None, problems
    item = Item(
        id=raw["id"],
        conversation=tuple(utterances),
        reference_ids=tuple(str(r) for r in refs),
        category=category,
        options=(options[0], options[1], options[2]),
        label=label,
        raw=raw,
    )
    return item, problems


def parse_items(data: Any, file: str) -> tuple[list[Item], list[Problem]]:
    """Parse decoded JSON of a whole file. Items with errors are left out of the list."""
    if not isinstance(data, list):
        return [], [Problem(file, "-", "file", f"expected a JSON list of items, got {type(data).__name__}")]
    if not data:
        return [], [Problem(file, "-", "file", "an empty list: no items")]
    items: list[Item] = []
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for index, raw in enumerate(data):
        item, item_problems = parse_item(raw, file, index)
        problems += item_problems
        iid = _item_id(raw, index)
        if iid in seen:
            problems.append(Problem(file, iid, "id", f"duplicate id (first at item #{seen[iid]}, again at #{index})"))
            continue
        seen[iid] = index
        if item is not None:
            items.append(item)
    return items, problems


def read_file_bytes(path: str | Path) -> bytes:
    """A file's bytes, or a DataError naming the file: missing, a directory, a device or FIFO, over
    the size cap (maerak.files.read_input_bytes), unreadable, empty."""
    try:
        data = read_input_bytes(path)
    except InputFileError as exc:
        raise DataError([Problem(str(path), "-", "file", exc.reason)]) from None
    if not data.strip():
        raise DataError([Problem(str(path), "-", "file", "empty file" if not data else "empty file (only whitespace)")])
    return data


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise ValueError(f"number {text[:40]} is too large for a float")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number (non-finite numbers are not JSON)")


def _shape_problem(data: Any, strings: bool) -> str | None:
    """What makes decoded JSON unusable though it parsed: nesting deeper than MAX_DEPTH (later
    recursive code would crash), or half of a UTF-16 pair (\\ud800 alone: cannot be written as UTF-8)."""
    kinds = (str, dict, list) if strings else (dict, list)
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return "a string holds an unpaired UTF-16 surrogate escape (\\ud800-\\udfff): not valid text"
        elif isinstance(value, (dict, list)):
            if depth > MAX_DEPTH:
                return f"nested more than {MAX_DEPTH} levels deep (a real item is 5): not a competition file"
            children = [*value, *value.values()] if isinstance(value, dict) else value
            stack += [(child, depth + 1) for child in children if isinstance(child, kinds)]
    return None


def decode_json(data: bytes, name: str) -> Any:
    """Decode JSON bytes strictly, tolerating a UTF-8 BOM and CRLF. Every failure is a DataError
    naming the file: UTF-16, not UTF-8, not JSON, NaN/Infinity, nesting too deep, lone surrogates."""
    def fail(message: str) -> DataError:
        return DataError([Problem(name, "-", "file", message)])

    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise fail("UTF-16 text (it starts with a UTF-16 byte-order mark); save it as UTF-8")
    if b"\x00" in data[:4096]:
        raise fail("contains NUL bytes: UTF-16 or binary, not UTF-8 JSON; save it as UTF-8")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise fail(f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    if not text.strip():
        raise fail("empty file (only a byte-order mark or whitespace)")
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        # "Invalid control character at" already ends in "at": one "at" before the position
        raise fail(f"not valid JSON: {exc.msg.removesuffix(' at')} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise fail(f"nested more than {MAX_DEPTH} levels deep (a real item is 5): not a competition file") from None
    except ValueError as exc:  # from the hooks above, or an integer of more than 4300 digits
        raise fail(f"not valid JSON: {str(exc)[:200]}") from None
    # Only a \\uD800-\\uDFFF escape can make a surrogate: the strings are walked only then.
    problem = _shape_problem(value, strings=SURROGATE_ESCAPE.search(text) is not None)
    if problem:
        raise fail(problem)
    return value


def read_json(path: str | Path) -> Any:
    """Decode a JSON file, tolerating a UTF-8 BOM and CRLF line endings."""
    return decode_json(read_file_bytes(path), str(path))


def load_items(path: str | Path, require_labels: bool = False) -> tuple[list[Item], list[Problem]]:
    """Load a competition file. Raises DataError listing every error; returns warnings."""
    items, problems = parse_items(read_json(path), str(path))
    if require_labels:
        problems += [Problem(str(path), it.id, "output", "label required in this file") for it in items if it.label is None]
    errors = [p for p in problems if p.severity == ERROR]
    if errors:
        raise DataError(errors)
    return items, problems


def with_outputs(items: list[Item], outputs: dict[str, str]) -> list[dict]:
    """The submission: each raw item unchanged except `output`, in input order."""
    return [{**item.raw, "output": outputs[item.id]} for item in items]
