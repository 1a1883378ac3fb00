"""Degenerate predictions: one answer for (almost) every item, or probabilities that do not depend
on the input. Both are what a collapsed or untrained model gives, and both can still score a
plausible-looking accuracy (a third of a balanced set), so submit and evaluate say so loudly.

Thresholds, and why:
- ONE_ANSWER_SHARE = 0.8: the most frequent answer takes more than 80% of the items. The task's
  three options are gold about equally often (the sample: 7/7/6 of 20 dev items); for a model
  whose answers track the gold on a balanced set, 80% of one answer is far outside chance (for
  20 items at 1/3 each, P(one answer >= 17) < 1e-5). When the gold is known (evaluate) and
  itself has that answer in more than 60% of items, the share is not flagged: the data is like that.
- MIN_SPREAD = 0.01: the mean total-variation distance between each item's probability vector and
  the mean vector. Below it, the answer distribution moves by less than a percentage point from
  item to item: the model answers the same whatever the conversation says (a constant output, or
  a position prior after TTA averaging).
- MIN_ITEMS = 10: fewer items say nothing either way.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

ONE_ANSWER_SHARE = 0.8
GOLD_LIKE_THAT = 0.6
MIN_SPREAD = 0.01
MIN_ITEMS = 10


def input_spread(probs: Sequence[Sequence[float]]) -> float:
    """Mean total-variation distance of each probability vector to the mean vector (0: all equal)."""
    n = len(probs)
    mean = [sum(p[i] for p in probs) / n for i in range(3)]
    return sum(0.5 * sum(abs(p[i] - mean[i]) for i in range(3)) for p in probs) / n


def degeneracy(predictions: Sequence[str], probs: Sequence[Sequence[float]] | None = None,
               gold: Mapping[str, int] | None = None) -> dict[str, Any]:
    """What `predictions` (one label per item), their probability vectors and, when known, the gold
    label counts say about collapse; `warnings` holds one line per finding (empty: none)."""
    n = len(predictions)
    out: dict[str, Any] = {"n": n, "warnings": []}
    if n < MIN_ITEMS:
        return out
    top, count = Counter(predictions).most_common(1)[0]
    share = count / n
    gold_share = gold[top] / sum(gold.values()) if gold and sum(gold.values()) else None
    out.update(top_answer=top, top_share=share, gold_share=gold_share,
               one_answer=share > ONE_ANSWER_SHARE and (gold_share is None or gold_share <= GOLD_LIKE_THAT))
    if out["one_answer"]:
        gold_note = "" if gold_share is None else f"; gold has it for {gold_share:.0%}"
        out["warnings"].append(f"WARNING: degenerate predictions: {top} for {count} of {n} items ({share:.0%}"
                               f"{gold_note}); the model is not reading the items")
    if probs is not None and len(probs) == n:
        spread = input_spread(probs)
        out.update(input_spread=spread, input_independent=spread < MIN_SPREAD)
        if out["input_independent"]:
            out["warnings"].append(f"WARNING: degenerate predictions: the probabilities hardly depend on the input "
                                   f"(mean distance to the mean vector {spread:.4f} < {MIN_SPREAD})")
    return out
