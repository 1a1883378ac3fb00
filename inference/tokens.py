"""A request as token ids, cut to fit the scorer's context length: the same for every backend."""
from __future__ import annotations

from dataclasses import dataclass

from maerak.modes import Request
from maerak.prompt import fit_prompt


@dataclass(frozen=True)
class Encoded:
    """A request as token ids: the context (with BOS) and each continuation's tokens."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


def encode_request(tokenizer, req: Request, max_length: int) -> tuple[Encoded, bool]:
    """The request as token ids, and whether its context was cut. The model reads the context and
    each continuation but its last token (that one is only predicted), so the context may take
    `max_length` minus (longest continuation - 1) tokens, as lm-evaluation-harness cuts. An
    over-long context leaves out the conversation's oldest turns (maerak.prompt.fit_prompt), so
    BOS, the instruction, the question and the options stay. Only when that is not enough (or
    the request has no item) are the oldest tokens after BOS cut."""
    continuations = tuple(tuple(req.mode.continuation_ids(tokenizer, c)) for c in req.continuations)
    room = max_length - (max(len(c) for c in continuations) - 1)
    ids = list(tokenizer(req.context, add_special_tokens=True)["input_ids"])
    if len(ids) <= room:
        return Encoded(tuple(ids), continuations), False
    if req.item is not None:
        context, _ = fit_prompt(req.item, req.order, lambda text: len(tokenizer(text)["input_ids"]), room,
                                lambda _item, skip: req.render(skip))
        ids = list(tokenizer(context, add_special_tokens=True)["input_ids"])
    if len(ids) > room:
        head = ids[:1] if ids and ids[0] == tokenizer.bos_token_id else []
        ids = head + ids[len(ids) - (room - len(head)):]
    return Encoded(tuple(ids), continuations), True
