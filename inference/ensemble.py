"""Option probabilities from log-likelihoods: per item (each request's mode maps its numbers back
to the original options, averaged over the orders), and across models (ensembles). Pure
functions of numbers, except `score_items`, which asks a scorer for them."""
from __future__ import annotations

from collections.abc import Callable, Sequence

from maerak.modes import Mode, Request
from maerak.schema import Item

ENSEMBLE_MODES = ("mean", "vote")

def average(rows: Sequence[Sequence[float]]) -> list[float]:
    n = len(rows)
    return [sum(r[i] for r in rows) / n for i in range(3)]


def argmax_first(values: Sequence[float]) -> int:
    """Index of the largest value; ties go to the LOWEST index (deterministic)."""
    best = 0
    for i in range(1, len(values)):
        if values[i] > values[best]:
            best = i
    return best


def combine(per_model: Sequence[Sequence[float]], mode: str = "mean") -> tuple[int, list[float]]:
    """Combine per-model option probabilities into (chosen option index, combined probs).

    mean: average the probabilities, argmax; exact ties -> lowest option index.
    vote: each model votes for its argmax (its own ties -> lowest index); the option
      with most votes wins; a tie in votes is broken by the higher mean probability
      among the tied options, then by the lowest option index.
    The returned probabilities are the mean probabilities in both modes.
    """
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"unknown ensemble mode {mode!r}; expected mean or vote")
    mean = average(per_model)
    if mode == "mean":
        return argmax_first(mean), mean
    votes = [0, 0, 0]
    for probs in per_model:
        votes[argmax_first(probs)] += 1
    top = max(votes)
    tied = [i for i in range(3) if votes[i] == top]
    best = tied[0]
    for i in tied[1:]:
        if mean[i] > mean[best]:
            best = i
    return best, mean



def item_probs(items: Sequence[Item], requests: Sequence[Request], loglikelihoods: Sequence[Sequence[float]]
               ) -> dict[str, list[float]]:
    """Per item: probabilities over the ORIGINAL options (each request's mode maps them), averaged
    over its orders."""
    rows: dict[str, list[list[float]]] = {it.id: [] for it in items}
    for req, lls in zip(requests, loglikelihoods):
        rows[req.item_id].append(req.mode.probabilities(req, lls))
    return {iid: average(r) for iid, r in rows.items()}


def score_items(scorer, items: Sequence[Item], mode: Mode, tta: str = "none", cache=None,
                on_batch: Callable[[int, int], None] | None = None, progress: bool = False) -> dict[str, list[float]]:
    requests = mode.requests(items, mode.orders(tta))
    lls = scorer.score(requests, cache=cache, on_batch=on_batch, progress=progress)
    return item_probs(items, requests, lls)
