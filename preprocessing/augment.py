"""Training rows for task items, tagged for the report.

Rows come only from the scoring mode (maerak/modes.py `Mode.training_rows`, which renders with
maerak.prompt, the one prompt renderer): in letters mode one row per item and option order
(`order[k]` is the original option shown at letter k, so the answer letter moves with it); in
options mode one row per item, answering with the option's text.
"""
from __future__ import annotations

from typing import NamedTuple

from maerak.modes import Mode
from maerak.schema import Item


class TaggedRow(NamedTuple):
    """A training row and where it came from, for the report (tag: `order 231` = original
    options 2, 3, 1 shown at A, B, C; `option` for an options-mode row; `+rationale` for a
    distilled row; `row` otherwise)."""

    source: str
    id: str
    tag: str
    row: dict


def tagged_preference_rows(source: str, items: list[Item], mode: Mode, orders_name: str = "none") -> list[TaggedRow]:
    """The mode's ORPO pairs for `items` (`Mode.preference_rows`), tagged like the rows above."""
    return [TaggedRow(source, r.id, r.tag, r.row) for r in mode.preference_rows(items, orders_name)]


def tagged_task_rows(source: str, items: list[Item], mode: Mode, orders_name: str = "none",
                     rationales: dict[str, str] | None = None) -> list[TaggedRow]:
    """The mode's training rows for `items` with their source, item id and tag; with
    `rationales`, the rationale rows instead (items without a rationale have none)."""
    return [TaggedRow(source, r.id, r.tag, r.row) for r in mode.training_rows(items, orders_name, rationales)]
