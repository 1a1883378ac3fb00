"""Scoring modes: what a checkpoint is trained to answer and how its answer is scored, one object each.

Every mode is scored by ONE primitive, as lm-evaluation-harness has it: the log-likelihood of a
continuation after a context (inference/scoring.py and inference/vllm_backend.py compute it).
A mode decides everything else, so prepare, submit and the backends never branch on its name:

- its training rows (`training_rows`), and what option-order augmentation means for them;
- its scoring requests (`requests`): per item and option order one `Request`, a context and the
  three continuations scored after it;
- how a continuation's text becomes tokens (`continuation_ids`);
- how the three log-likelihoods become probabilities over the ORIGINAL options (`probabilities`);
- its cache key (`key`), and what permutation TTA means for it (`orders`, `tta_note`);
- its preference pairs for the ORPO stage (`preference_rows`): the scored context as the prompt,
  the correct continuation as `chosen`, each wrong one as `rejected`.

    letters: context = the prompt listing the options under letters A/B/C (`render_prompt`);
             continuations = the three letters, each ONE token: the letter's first response token
             (`answer_token_ids`), which is what letter training teaches the model to put first.
             Its log-likelihood is log p(letter token | prompt), a log-softmax over the whole
             vocabulary at the last prompt position; the softmax over the three of them equals the
             softmax over the three letter logits (the log-sum-exp cancels).
    options: context = conversation and question without options (`render_context`);
             continuations = the three option texts, all their response tokens (no EOS), summed.

The mode a checkpoint was trained for is recorded next to its weights (`RECORD`, written after
stage 2 from prepare's report) and read back by submit (`checkpoint_mode`).
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from maerak.errors import MaerakError
from maerak.files import atomic_write_json
from maerak.prompt import (
    IDENTITY,
    INSTRUCTION,
    LETTERS,
    OPTIONS_INSTRUCTION,
    alpaca_row,
    answer_token_ids,
    option_row,
    orders_named,
    render_context,
    render_prompt,
    response_ids,
)
from maerak.schema import Item

RECORD = "maerak-mode.json"  # in a stage-2 checkpoint: {"mode": "<name>"}


class ModeError(MaerakError):
    """An unknown mode name, or a mode that contradicts the one a checkpoint was trained for."""


class NonFiniteError(MaerakError):
    """A log-likelihood that is NaN or infinite: the checkpoint is broken (a NaN weight, an overflow)
    and every number after it would be too (`argmax_first` of NaNs is option 1 for every item)."""


@dataclass(frozen=True)
class Request:
    """One context and the continuations scored after it: the unit every backend scores (the
    continuations of one request share the context's forward pass). `order[k]` is the original
    option behind continuation k; `item` lets the backend re-render an over-long context."""

    item_id: str
    order: tuple[int, ...]
    context: str
    continuations: tuple[str, ...]
    mode: Mode = field(compare=False, repr=False)
    item: Item | None = field(default=None, compare=False, repr=False)

    @property
    def order_key(self) -> str:
        return "".join(str(i) for i in self.order)

    def render(self, skip_turns: int) -> str:
        """The context with the `skip_turns` oldest conversation turns left out (needs `item`)."""
        if self.item is None:
            raise ModeError(f"{self.item_id}: no item to re-render the context from")
        return self.mode.render(self.item, self.order, skip_turns)


@dataclass(frozen=True)
class Row:
    """A training row with its item id and a tag saying which variant it is (for the report)."""

    id: str
    tag: str
    row: dict


def softmax(values: Sequence[float]) -> list[float]:
    """Softmax (float64, max-shifted) over the three continuations' log-likelihoods."""
    top = max(values)
    exps = [math.exp(x - top) for x in values]
    total = sum(exps)
    return [e / total for e in exps]


def check_finite(request: Request, loglikelihoods: Sequence[float]) -> None:
    """Refuse a non-finite log-likelihood before it becomes a probability or a cached number."""
    for k, x in enumerate(loglikelihoods):
        if not math.isfinite(x):
            raise NonFiniteError(f"item {request.item_id}: the log-likelihood of continuation {k + 1} "
                                 f"({request.continuations[k]!r}, order {request.order_key}) is {x}, not a finite number")


def to_original(probs: Sequence[float], order: Sequence[int]) -> list[float]:
    """order[k] is the original option behind continuation k: p_orig[order[k]] = p[k]."""
    out = [0.0, 0.0, 0.0]
    for k, i in enumerate(order):
        out[i] = float(probs[k])
    return out


def order_tag(order: Sequence[int]) -> str:
    return "order " + "".join(str(i + 1) for i in order)


class Mode:
    """What both modes share; a mode overrides what differs (see the module docstring)."""

    name: str
    key: str  # in every cache key: bump it when what a cached number means changes
    instruction: str

    # --- scoring
    def orders(self, tta: str) -> tuple[tuple[int, ...], ...]:
        """The option orders permutation TTA `tta` scores (maerak.prompt.ORDER_SETS)."""
        return orders_named(tta)

    def tta_note(self, tta: str) -> str | None:
        """A line to tell the user when `tta` means less than its name says in this mode."""
        return None

    def render(self, item: Item, order: Sequence[int], skip_turns: int = 0) -> str:
        raise NotImplementedError

    def continuations(self, item: Item, order: Sequence[int]) -> tuple[str, ...]:
        raise NotImplementedError

    def continuation_ids(self, tokenizer, text: str) -> list[int]:
        raise NotImplementedError

    def request(self, item: Item, order: Sequence[int] = IDENTITY) -> Request:
        order = tuple(order)
        return Request(item.id, order, self.render(item, order), self.continuations(item, order), self, item)

    def requests(self, items: Iterable[Item], orders: Sequence[Sequence[int]]) -> list[Request]:
        """One request per item and order, an item's orders adjacent."""
        return [self.request(it, o) for it in items for o in orders]

    def probabilities(self, request: Request, loglikelihoods: Sequence[float]) -> list[float]:
        """Probabilities over the ORIGINAL options from the request's three log-likelihoods."""
        check_finite(request, loglikelihoods)
        return to_original(softmax(loglikelihoods), request.order)

    # --- training
    def training_rows(self, items: Sequence[Item], orders_name: str = "none",
                      rationales: dict[str, str] | None = None) -> list[Row]:
        """One row per item and order; with `rationales`, the rationale rows instead (for the items
        that have one): the answer first, then `근거: …`, so the scored answer stays the same."""
        raise NotImplementedError

    def augmentation_note(self, orders_name: str) -> str | None:
        """A line for the report when `orders_name` means less than its name says in this mode."""
        return None

    def preference_rows(self, items: Sequence[Item], orders_name: str = "none") -> list[Row]:
        """The ORPO stage's pairs: per item and order, the request's context as `prompt`, the correct
        continuation as `chosen` and each wrong one as `rejected` (two pairs). Plain strings, as the
        scorer reads them: the trainer (training/orpo_trainer.py) tokenizes the prompt as the scorer
        tokenizes the context and each answer as the scorer tokenizes a continuation."""
        rows = []
        for it in items:
            if it.label_index is None:
                raise ValueError(f"{it.id}: no label to build preference pairs from")
            for order in self.orders_for_training(orders_name):
                req = self.request(it, order)
                gold = req.order.index(it.label_index)
                chosen = req.continuations[gold]
                # tag: the order, then the original option rejected; an option reading like the gold one is no pair
                rows += [Row(it.id, f"{order_tag(order)} rejected {req.order[k] + 1}",
                             {"prompt": req.context, "chosen": chosen, "rejected": text})
                         for k, text in enumerate(req.continuations) if k != gold and text != chosen]
        return rows

    def orders_for_training(self, orders_name: str) -> tuple[tuple[int, ...], ...]:
        """The option orders training rows are written in (letters: each order; options: one)."""
        return orders_named(orders_name)

    def __repr__(self) -> str:
        return f"<mode {self.name}>"


class LettersMode(Mode):
    name = "letters"
    key = "letters1"
    instruction = INSTRUCTION

    def render(self, item: Item, order: Sequence[int], skip_turns: int = 0) -> str:
        return render_prompt(item, order, skip_turns)

    def continuations(self, item: Item, order: Sequence[int]) -> tuple[str, ...]:
        return LETTERS

    def continuation_ids(self, tokenizer, text: str) -> list[int]:
        # one token: the first response token of the letter (answer_token_ids checks they differ)
        return [answer_token_ids(tokenizer)[LETTERS.index(text)]]

    def training_rows(self, items: Sequence[Item], orders_name: str = "none",
                      rationales: dict[str, str] | None = None) -> list[Row]:
        orders = orders_named(orders_name)
        if rationales is None:
            return [Row(it.id, order_tag(o), alpaca_row(it, o)) for it in items for o in orders]
        return [Row(it.id, order_tag(o) + "+rationale", alpaca_row(it, o, rationale=rationales[it.id]))
                for it in items for o in orders if rationales.get(it.id)]


class OptionsMode(Mode):
    name = "options"
    key = "options1"
    instruction = OPTIONS_INSTRUCTION

    def orders(self, tta: str) -> tuple[tuple[int, ...], ...]:
        orders_named(tta)  # still a known name
        return (IDENTITY,)  # the context shows no options: every order gives the same numbers

    def tta_note(self, tta: str) -> str | None:
        if orders_named(tta) == (IDENTITY,):
            return None
        return f"tta={tta} has nothing to permute in options mode (the prompt shows no options); scoring once"

    def render(self, item: Item, order: Sequence[int], skip_turns: int = 0) -> str:
        return render_context(item, skip_turns)

    def continuations(self, item: Item, order: Sequence[int]) -> tuple[str, ...]:
        return tuple(item.options[i] for i in order)

    def continuation_ids(self, tokenizer, text: str) -> list[int]:
        tokens = response_ids(tokenizer, text)
        if not tokens:
            raise ModeError(f"option text {text!r} has no tokens to score")
        return tokens

    def training_rows(self, items: Sequence[Item], orders_name: str = "none",
                      rationales: dict[str, str] | None = None) -> list[Row]:
        orders_named(orders_name)  # still a known name; one row per item (augmentation_note)
        if rationales is None:
            return [Row(it.id, "option", option_row(it)) for it in items]
        return [Row(it.id, "option+rationale", option_row(it, rationale=rationales[it.id]))
                for it in items if rationales.get(it.id)]

    def orders_for_training(self, orders_name: str) -> tuple[tuple[int, ...], ...]:
        orders_named(orders_name)  # still a known name
        return (IDENTITY,)

    def augmentation_note(self, orders_name: str) -> str | None:
        if orders_named(orders_name) == (IDENTITY,):
            return None
        return f"orders {orders_name}: options-mode rows show no options, so there is one row per item"


LETTERS_MODE, OPTIONS_MODE = LettersMode(), OptionsMode()
MODES: dict[str, Mode] = {m.name: m for m in (LETTERS_MODE, OPTIONS_MODE)}


def mode_named(name: str | Mode) -> Mode:
    if isinstance(name, Mode):
        return name
    if name not in MODES:
        raise ModeError(f"unknown scoring mode {name!r}; expected one of {', '.join(MODES)}")
    return MODES[name]


# ---------------------------------------------------------------- what a checkpoint was trained for
def write_record(checkpoint_dir: str | Path, mode: str | Mode) -> Path:
    """Record next to the weights the mode the checkpoint's training rows were written for."""
    return atomic_write_json(Path(checkpoint_dir) / RECORD, {"mode": mode_named(mode).name})


def clear_record(checkpoint_dir: str | Path) -> None:
    """Before training into a directory: a record must never outlive the weights it describes."""
    (Path(checkpoint_dir) / RECORD).unlink(missing_ok=True)


def read_record(checkpoint_dir: str | Path) -> Mode | None:
    """The mode recorded with a checkpoint; None when it has no record (trained before records)."""
    path = Path(checkpoint_dir) / RECORD
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ModeError(f"{path}: unreadable ({type(exc).__name__}); train the checkpoint again") from None
    if not isinstance(data, dict) or not isinstance(data.get("mode"), str):
        raise ModeError(f"{path}: mode: missing; expected {{\"mode\": \"letters\" | \"options\"}}")
    try:
        return mode_named(data["mode"])
    except ModeError as exc:
        raise ModeError(f"{path}: mode: {exc}") from None


def prepared_mode(report_json: str | Path) -> Mode | None:
    """The mode prepare wrote its rows for (its report.json `mode`); None for an older report."""
    try:
        name = json.loads(Path(report_json).read_text(encoding="utf-8")).get("mode")
    except (OSError, ValueError, AttributeError):
        return None
    return mode_named(name) if name is not None else None


def checkpoint_mode(checkpoints: Sequence[str | Path], asked: str | None, default: str) -> tuple[Mode, list[str]]:
    """The mode to score `checkpoints` in, and warnings. Their records decide; `asked` (submit --mode)
    must agree with them; a checkpoint without a record falls back to `asked`, else `default`
    (the profile's scoring.mode), with a warning. Contradictions raise ModeError."""
    recorded = {str(c): read_record(c) for c in checkpoints}
    known = {c: m for c, m in recorded.items() if m is not None}
    names = sorted({m.name for m in known.values()})
    if len(names) > 1:
        raise ModeError("checkpoints trained for different scoring modes: "
                        + ", ".join(f"{c} ({m.name})" for c, m in known.items()))
    if asked is not None and names and asked != names[0]:
        c = next(iter(known))
        raise ModeError(f"--mode {asked}: {c} was trained for {names[0]} mode ({Path(c) / RECORD}); "
                        f"drop --mode or pass --mode {names[0]}")
    mode = mode_named(names[0] if names else (asked or default))
    warnings = [f"warning: {c}: no {RECORD} (trained before modes were recorded); scoring in {mode.name} mode "
                f"({'from the other checkpoints' if names else '--mode' if asked else 'the profile scoring.mode'})"
                for c, m in recorded.items() if m is None]
    return mode, warnings
