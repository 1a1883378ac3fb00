"""Alpaca rows for task items, with option-order augmentation.

Rows come only from maerak.prompt.alpaca_row (the one prompt renderer). `order[k]` is
the original option shown at letter k, so the answer letter moves with the option.
"""
from __future__ import annotations

from maerak.prompt import ALL_ORDERS, CYCLIC_ORDERS, IDENTITY, alpaca_row
from maerak.schema import Item

ORDERS = {"identity": (IDENTITY,), "cyclic": CYCLIC_ORDERS, "all": ALL_ORDERS}


def orders_named(name: str) -> tuple[tuple[int, ...], ...]:
    if name not in ORDERS:
        raise ValueError(f"unknown option order set {name!r}; expected one of {', '.join(ORDERS)}")
    return ORDERS[name]


def task_rows(items: list[Item], orders_name: str = "identity") -> list[dict]:
    """One row per item and order (the orders of one item are adjacent)."""
    orders = orders_named(orders_name)
    return [alpaca_row(item, order) for item in items for order in orders]
