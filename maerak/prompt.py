"""The one prompt renderer: training rows and inference prompts both come from here.

Training files are alpaca rows (instruction / input / output) that Axolotl's
`alpaca` dataset type wraps; `render_prompt` applies the same wrapper so that the
prompt scored at inference is byte-for-byte the prompt seen in training
(tests/test_prompt.py checks this against Axolotl's own prompter).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import permutations

from maerak.schema import Item

LETTERS = ("A", "B", "C")
IDENTITY: tuple[int, int, int] = (0, 1, 2)
IGNORE_INDEX = -100  # an untrained label (transformers, Axolotl, TRL)
CYCLIC_ORDERS: tuple[tuple[int, int, int], ...] = ((0, 1, 2), (1, 2, 0), (2, 0, 1))
ALL_ORDERS: tuple[tuple[int, ...], ...] = tuple(permutations(range(3)))
# The named sets of option orders: training augmentation (sources.yml augment.*_orders) and
# permutation TTA (profiles.yml scoring.tta, submit --tta) both choose from this one table.
ORDER_SETS: dict[str, tuple[tuple[int, ...], ...]] = {"none": (IDENTITY,), "cyclic": CYCLIC_ORDERS, "all": ALL_ORDERS}


def orders_named(name: str) -> tuple[tuple[int, ...], ...]:
    if name not in ORDER_SETS:
        raise ValueError(f"unknown option order set {name!r}; expected one of {', '.join(ORDER_SETS)}")
    return ORDER_SETS[name]

INSTRUCTION = "다음 대화를 읽고 질문에 가장 알맞은 지문을 A, B, C 중에서 하나 골라 그 기호만 답하세요."
# The options-mode instruction (maerak/modes.py: the prompt shows no options; the answer is the option's text).
OPTIONS_INSTRUCTION = "다음 대화를 읽고 질문에 가장 알맞은 지문을 쓰세요."

# Axolotl's `alpaca` type (AlpacaPrompter, instruct style) wraps rows exactly like this.
ALPACA_SYSTEM = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
)
ALPACA_TURN = "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"


def has_final_consonant(syllable: str) -> bool:
    """True when a Hangul syllable ends in a batchim (final consonant)."""
    code = ord(syllable) - 0xAC00
    if not 0 <= code < 11172:
        return False
    return code % 28 != 0


def ro_particle(word: str) -> str:
    """로 after a vowel or ㄹ, 으로 after any other final consonant (동기로, 원인으로)."""
    last = word[-1]
    rieul = (ord(last) - 0xAC00) % 28 == 8 if has_final_consonant(last) else False
    return "으로" if has_final_consonant(last) and not rieul else "로"


def question_line(category: str) -> str:
    return f"위 대화의 {category}{ro_particle(category)} 올바른 지문은?"


def context_lines(item: Item, skip_turns: int = 0) -> list[str]:
    """Conversation and question (with the referenced utterances): what both modes show first.
    `skip_turns` leaves the oldest turns out of [Conversation] only (an over-long prompt at
    inference, see `fit_prompt`); the question's target utterances are always shown."""
    lines = ["[Conversation]"]
    lines += [f"화자{u.speaker}: {u.text}" for u in item.conversation[skip_turns:]]
    lines += ["", "[Question]", question_line(item.category)]
    refs = set(item.reference_ids)
    targets = [u for u in item.conversation if refs.intersection(u.ids)]
    lines += [f"대상 발화 - 화자{u.speaker}: {u.text}" for u in targets]
    return lines


def render_input(item: Item, order: Sequence[int] = IDENTITY, skip_turns: int = 0) -> str:
    """The letters-mode task body: `context_lines`, then the options, `order[k]` being the
    index of the original option shown at letter k."""
    lines = context_lines(item, skip_turns) + ["", "[Option]"]
    lines += [f"{LETTERS[k]}. {item.options[i]}" for k, i in enumerate(order)]
    return "\n".join(lines)


def render_context(item: Item, skip_turns: int = 0) -> str:
    """The options-mode prompt: conversation and question without the options; each option's
    text is the continuation scored after it (and the trained answer)."""
    return wrap_alpaca(OPTIONS_INSTRUCTION, "\n".join(context_lines(item, skip_turns)))


def option_row(item: Item, rationale: str | None = None) -> dict:
    """One options-mode training row: the correct option's text is the answer (then, for a row
    augmented with a distilled rationale, the rationale, as `alpaca_row` puts it after the letter)."""
    if item.label_index is None:
        raise ValueError(f"{item.id}: no label to render an answer from")
    output = with_rationale(item.options[item.label_index], rationale)
    return {"instruction": OPTIONS_INSTRUCTION, "input": "\n".join(context_lines(item)), "output": output}


def with_rationale(answer: str, rationale: str | None) -> str:
    """The answer first, so that scoring it stays valid for rows augmented with a rationale."""
    return f"{answer}\n근거: {rationale.strip()}" if rationale else answer


def answer_letter(item: Item, order: Sequence[int] = IDENTITY) -> str:
    if item.label_index is None:
        raise ValueError(f"{item.id}: no label to render an answer from")
    return LETTERS[list(order).index(item.label_index)]


def wrap_alpaca(instruction: str, input_text: str) -> str:
    return ALPACA_SYSTEM + ALPACA_TURN.format(instruction=instruction, input=input_text)


def render_prompt(item: Item, order: Sequence[int] = IDENTITY, skip_turns: int = 0) -> str:
    """The exact text the model scores at inference (and is trained on, minus the answer)."""
    return wrap_alpaca(INSTRUCTION, render_input(item, order, skip_turns))


def fit_prompt(item: Item, order: Sequence[int], n_tokens: Callable[[str], int], max_tokens: int,
               render: Callable[[Item, int], str] | None = None) -> tuple[str, int]:
    """The prompt with as few of the oldest conversation turns left out as makes it at most
    `max_tokens` long (by `n_tokens`), and how many were left out. The preamble and
    instruction, the question with its target utterances and the options always stay,
    so the last resort is the prompt with no conversation turns (which may still be too long).
    `render(item, skip_turns)` is `render_prompt` under `order` unless given (options mode
    passes `render_context`)."""
    if render is None:
        def render(it: Item, skip: int) -> str:
            return render_prompt(it, order, skip)
    full = render(item, 0)
    if n_tokens(full) <= max_tokens:
        return full, 0
    lo, hi = 1, len(item.conversation)
    while lo < hi:  # fewest turns left out that fit (fewer turns never means more tokens)
        mid = (lo + hi) // 2
        if n_tokens(render(item, mid)) <= max_tokens:
            hi = mid
        else:
            lo = mid + 1
    return render(item, lo), lo


def alpaca_row(item: Item, order: Sequence[int] = IDENTITY, rationale: str | None = None) -> dict:
    """One training row. The answer letter comes first so that letter scoring stays valid
    for rows augmented with a distilled rationale."""
    output = with_rationale(answer_letter(item, order), rationale)
    return {"instruction": INSTRUCTION, "input": render_input(item, order), "output": output}


def response_ids(tokenizer, text: str) -> list[int]:
    """`text` tokenized the way Axolotl's alpaca strategy tokenizes a response: on its own,
    BOS stripped (Axolotl then appends EOS, which no mode scores)."""
    tokens = list(tokenizer(text)["input_ids"])
    if tokens and tokens[0] == tokenizer.bos_token_id:
        tokens = tokens[1:]
    return tokens


def preference_ids(tokenizer, prompt: str, chosen: str, rejected: str, max_length: int | None = None) -> dict[str, list[int]]:
    """One ORPO pair (`maerak.modes.Mode.preference_rows`) tokenized as TRL's ORPO collator takes it
    (prompt_*, chosen_*, rejected_* keys) and as the scorer reads it: prompt ids = tokenizer(prompt)
    (BOS first, as a scored context), each answer = `response_ids` (as a scored continuation) + EOS."""
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    out: dict[str, list[int]] = {"prompt_input_ids": prompt_ids, "prompt_attention_mask": [1] * len(prompt_ids)}
    for key, text in (("chosen", chosen), ("rejected", rejected)):
        answer = response_ids(tokenizer, text) + [tokenizer.eos_token_id]
        ids = prompt_ids + answer
        if max_length is not None and len(ids) > max_length:
            raise ValueError(f"preference row of {len(ids)} tokens is over max_length {max_length} "
                             "(prepare checks rows against sequence_len; this one slipped past it)")
        out[f"{key}_input_ids"] = ids
        out[f"{key}_attention_mask"] = [1] * len(ids)
        out[f"{key}_labels"] = [IGNORE_INDEX] * len(prompt_ids) + answer
    return out


def answer_token_ids(tokenizer) -> list[int]:
    """Token id of each answer letter, tokenized as a response (`response_ids`). The first
    response token is what training teaches the model to predict after the prompt, so it is
    the one to score at inference."""
    ids = []
    for letter in LETTERS:
        tokens = response_ids(tokenizer, letter)
        if not tokens:
            raise ValueError(f"tokenizer produced no token for answer letter {letter!r}")
        ids.append(tokens[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"answer letters share a first token: {dict(zip(LETTERS, ids))}")
    return ids
