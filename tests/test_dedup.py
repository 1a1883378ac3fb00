"""Simhash near-duplicate removal: the unit is the full example (conversation + question + options)."""
from __future__ import annotations

import dataclasses
import random

import numpy as np

from maerak.schema import load_items
from preprocessing import dedup


def test_fingerprints_equal_the_simhash_package():
    texts = ["화자1: 나 다음 주에 드디어 이사해 ㅋㅋ", "ab", "", "위 대화의 원인으로 올바른 지문은?\nA. 화자1은 ..."]
    fps = dedup.fingerprints(texts, chunk=3)
    assert [int(x) for x in fps] == [dedup.reference_fingerprint(t) for t in texts]


def test_same_conversation_items_all_kept_true_duplicate_dropped(sample_dir):
    items, _ = load_items(sample_dir / "train.json")
    by_conv = {}
    for it in items:
        by_conv.setdefault(it.conversation_key, []).append(it)
    assert max(len(v) for v in by_conv.values()) >= 3  # the sample shares conversations
    copy = items[4]
    conv = list(copy.conversation)
    conv[1] = dataclasses.replace(conv[1], text=conv[1].text + " 응")
    near = dataclasses.replace(copy, id="copy", conversation=tuple(conv))
    pool = items + [near]
    fps = dedup.part_fingerprints([dedup.item_parts(it) for it in pool])
    dropped = dedup.near_duplicates(fps, 5)
    assert [(m.index, m.other) for m in dropped] == [(len(items), 4)]


def test_only_conversation_or_only_options_alike_is_not_a_duplicate(sample_dir):
    items, _ = load_items(sample_dir / "train.json")
    a, b = items[0], items[10]
    mixed = dataclasses.replace(a, conversation=b.conversation, id="mixed")  # a's question on b's chat
    fps = dedup.part_fingerprints([dedup.item_parts(x) for x in (a, b, mixed)])
    assert dedup.near_duplicates(fps, 5) == []


def test_index_agrees_with_pairwise_baseline():
    rng = random.Random(0)
    syll = [chr(0xAC00 + rng.randrange(11172)) for _ in range(300)]
    base = ["".join(rng.choice(syll) for _ in range(300)) for _ in range(150)]
    texts = base + [t[:140] + "가" + t[141:] for t in base[:30]]
    parts = [(t, t[:150]) for t in texts]
    fps = dedup.part_fingerprints(parts)
    fast = dedup.near_duplicates(fps, 5)
    slow = dedup.pairwise_near_duplicates(fps, 5)
    assert [(m.index, m.other) for m in fast] == [(m.index, m.other) for m in slow]
    assert len(fast) >= 15  # most injected copies found (1 edit in 150-300 chars)


def test_cross_matches_report_train_eval_pairs(sample_dir):
    train, _ = load_items(sample_dir / "train.json")
    dev, _ = load_items(sample_dir / "dev.json")
    leaked = dataclasses.replace(dev[3], id="leak")
    tr = dedup.part_fingerprints([dedup.item_parts(x) for x in train + [leaked]])
    ev = dedup.part_fingerprints([dedup.item_parts(x) for x in dev])
    hits = dedup.cross_matches(tr, ev, 5)
    assert [(m.index, m.other) for m in hits] == [(len(train), 3)]


def test_empty_inputs():
    assert dedup.part_fingerprints([]).shape == (0, 2)
    assert dedup.near_duplicates(np.zeros((0, 2), dtype=np.uint64)) == []
