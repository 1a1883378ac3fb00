"""Synthetic items with the official files' shape, for the benches (the official files are licensed).

The official test file: 605 items from 209 conversations (~3 items a conversation), conversations
of ~500 Gemma tokens, options of one sentence. These items take their utterances and options from
the synthetic sample (data/sample), joined until a conversation's [Conversation] lines reach
`conversation_tokens` tokens under the bench model's tokenizer, and are parsed by the project's
schema like any official file. Their text is meaningless: they measure speed, not accuracy.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

from maerak.schema import LABELS, Item, parse_items

ROOT = Path(__file__).resolve().parent.parent
CATEGORIES = ("원인", "후행사건", "전제", "동기", "반응")
# The official files' sizes: the per-CPU-class time arithmetic (bench/render.py) prices an
# official-cpu run on them from the benches' per-row rates (options mode: one stage-2 row per item).
OFFICIAL_ITEMS = {"train": 758, "dev": 151, "test": 605}


def sample_texts() -> tuple[list[str], list[str]]:
    """Every utterance and every option text in the synthetic sample."""
    utterances, options = [], []
    for split in ("train", "dev", "test"):
        for raw in json.loads((ROOT / "data" / "sample" / f"{split}.json").read_text(encoding="utf-8")):
            utterances += [str(u["utterance"]) for u in raw["input"]["conversation"]]
            options += [raw["input"][k] for k in LABELS]
    return utterances, options


def synthetic_items(tokenizer, conversations: int = 10, items_per_conversation: int = 3,
                    conversation_tokens: int = 500, seed: int = 0) -> list[Item]:
    """`conversations` × `items_per_conversation` labelled items, each conversation grown turn by
    turn until its lines are `conversation_tokens` tokens long."""
    rng = random.Random(seed)
    utterances, options = sample_texts()
    raw = []
    for c in range(conversations):
        turns: list[dict] = []
        while len(tokenizer("\n".join(f"화자{t['speaker']}: {t['utterance']}" for t in turns))["input_ids"]) < conversation_tokens:
            turns.append({"speaker": 1 + len(turns) % 2, "utterance": rng.choice(utterances),
                          "utterance_id": f"SYN{c:04d}.1.{len(turns) + 1}"})
        for k in range(items_per_conversation):
            picked = rng.sample(options, 3)
            raw.append({"id": f"synthetic-{c:04d}-{k}",
                        "input": {"conversation": turns, "reference_id": [rng.choice(turns)["utterance_id"]],
                                  "category": CATEGORIES[(c + k) % len(CATEGORIES)],
                                  **dict(zip(LABELS, picked))},
                        "output": rng.choice(LABELS)})
    items, problems = parse_items(raw, "<synthetic>")
    if problems:
        raise ValueError(f"synthetic items do not parse: {problems[0]}")
    return items
