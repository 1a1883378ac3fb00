"""Alpaca rows for task items, with option-order augmentation.

Rows come only from maerak.prompt.alpaca_row (the one prompt renderer). `order[k]` is
the original option shown at letter k, so the answer letter moves with the option.
"""
from __future__ import annotations

from typing import NamedTuple

from maerak.prompt import alpaca_row, option_row, orders_named
from maerak.schema import Item


class TaggedRow(NamedTuple):
    """A training row and where it came from, for the report (tag: `order 231` = original
    options 2, 3, 1 shown at A, B, C; `+rationale` for a distilled row; `row` otherwise)."""

    source: str
    id: str
    tag: str
    row: dict


def order_tag(order: tuple[int, ...]) -> str:
    return "order " + "".join(str(i + 1) for i in order)


def task_rows(items: list[Item], orders_name: str = "none") -> list[dict]:
    """One row per item and order (the orders of one item are adjacent)."""
    return [t.row for t in tagged_task_rows("", items, orders_name)]


def tagged_task_rows(source: str, items: list[Item], orders_name: str = "none",
                     rationales: dict[str, str] | None = None, mode: str = "letters") -> list[TaggedRow]:
    """task_rows with their source, item id and order; with `rationales`, the rationale
    rows (one per order, for items that have a rationale) instead. In options mode a row's
    answer is the correct option's text and shows no options, so there is one row per item
    (no orders to augment) and no rationale rows (the answer is not a letter)."""
    orders = orders_named(orders_name)
    if mode == "options":
        return [] if rationales is not None else [TaggedRow(source, it.id, "option", option_row(it)) for it in items]
    if rationales is None:
        return [TaggedRow(source, it.id, order_tag(o), alpaca_row(it, o)) for it in items for o in orders]
    return [TaggedRow(source, it.id, order_tag(o) + "+rationale", alpaca_row(it, o, rationale=rationales[it.id]))
            for it in items for o in orders if rationales.get(it.id)]
