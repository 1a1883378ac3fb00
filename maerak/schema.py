"""The official item schema: parse, validate and normalise competition files.

Parsing is pure (`parse_items` takes decoded JSON and returns items plus
problems); `load_items` is the file edge. Every problem names the file, the
item id and the field, so a user can find it in a 1,000-item file.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CATEGORIES: tuple[str, ...] = ("원인", "후행사건", "전제", "동기", "반응")
LABELS: tuple[str, ...] = ("inference_1", "inference_2", "inference_3")
ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class Problem:
    file: str
    item_id: str
    field: str
    message: str
    severity: str = ERROR

    def __str__(self) -> str:
        prefix = "" if self.severity == ERROR else "warning: "
        return f"{self.file}: {self.item_id}: {self.field}: {prefix}{self.message}"


class DataError(Exception):
    """Raised when a file has errors; carries every problem found, not just the first."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


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
        if isinstance(speaker, str) and speaker.strip().isdigit():
            speaker = int(speaker)
        if not isinstance(speaker, int) or isinstance(speaker, bool):
            problems.append(Problem(file, iid, f"{where}.speaker", f"expected an integer, got {speaker!r}"))
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
        uid = u.get("utterance_id")
        ids = tuple(str(x) for x in uid) if isinstance(uid, list) else ((str(uid),) if uid is not None else ())
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
        problems.append(Problem(file, iid, "input.category", f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}"))
    options = []
    for key in LABELS:
        value = inp.get(key)
        if not isinstance(value, str) or not value.strip():
            problems.append(Problem(file, iid, f"input.{key}", "missing or empty option"))
        options.append(value if isinstance(value, str) else "")
    refs = inp.get("reference_id", [])
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list):
        problems.append(Problem(file, iid, "input.reference_id", "expected a list of utterance ids"))
        refs = []
    known = {i for u in utterances for i in u.ids}
    for ref in refs:
        if str(ref) not in known:
            problems.append(Problem(file, iid, "input.reference_id", f"{ref!r} points at no utterance", WARNING))
    output = raw.get("output")
    label: str | None
    if output in (None, ""):
        label = None
    elif output in LABELS:
        label = output
    else:
        label = None
        problems.append(Problem(file, iid, "output", f"unknown label {output!r}; expected one of {', '.join(LABELS)} or \"\""))
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


def read_json(path: str | Path) -> Any:
    """Decode a JSON file, tolerating a UTF-8 BOM and CRLF line endings."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise DataError([Problem(str(path), "-", "file", "no such file")]) from None
    except UnicodeDecodeError as exc:
        raise DataError([Problem(str(path), "-", "file", f"not UTF-8 ({exc.reason} at byte {exc.start})")]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError([Problem(str(path), "-", "file", f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]) from None


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
