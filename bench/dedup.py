"""Benchmark: simhash near-duplicate removal on generated Korean-like task items.

    .venv/bin/python bench/dedup.py [--n 200000] [--dup-fraction 0.05] [--subset 2000]

Items are template conversations (5-8 utterances, random Hangul syllables in fixed
frames) with a question and three options, rendered by maerak.prompt like the real
data; several items share each conversation (as in the official files). A known
fraction are injected near-duplicates of earlier items (1-3 syllables edited, or
punctuation / spacing changed), so recall and precision are printed. The full pipeline
(render -> fingerprints -> band index -> greedy keep-first) is timed; the O(n^2)
pairwise baseline runs on a subset, against the band index on the same subset.
Not a test: numbers go to preprocessing/README.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from maerak.schema import CATEGORIES, Item, Utterance  # noqa: E402
from preprocessing import dedup  # noqa: E402

FRAMES = [
    "나 {a} {b} 했는데 {c} 어떡하지", "헐 진짜? {a}{b} 때문에?", "{a} {b}는 좀 {c} 것 같아 ㅋㅋ",
    "그럼 내가 {a}에 {b} 도와줄게", "아 {a} {b} 너무 {c}", "응 {a}는 {b}에서 {c}로 가",
    "{a} {b}하면 {c} 괜찮을 듯", "고마워 ㅠㅠ {a} {b} 쏠게", "오 {a} 좋다! {b}도 {c}",
]
OPTION = ["화자{s}은 {a} {b} 때문에 {c}했다.", "화자{s}은 {a}에게 {b}를 {c}고 싶었다.", "화자{s}은 {a} {b}을 걱정하고 있었다."]


def word(rng: random.Random, syll: list[str]) -> str:
    return "".join(rng.choice(syll) for _ in range(rng.randint(1, 3)))


def make_items(n: int, dup_fraction: float, seed: int = 0) -> tuple[list[Item], dict[int, int]]:
    """Returns items and {index of injected copy: index of its original}."""
    rng = random.Random(seed)
    syll = [chr(0xAC00 + rng.randrange(11172)) for _ in range(2000)]
    items: list[Item] = []
    injected: dict[int, int] = {}
    conv: tuple[Utterance, ...] = ()
    while len(items) < n:
        if items and rng.random() < dup_fraction:
            src = rng.randrange(len(items))
            injected[len(items)] = src
            items.append(perturb(items[src], rng, syll, len(items)))
            continue
        if not conv or rng.random() < 0.3:  # ~3 items per conversation
            conv = tuple(
                Utterance(1 + k % 2, rng.choice(FRAMES).format(a=word(rng, syll), b=word(rng, syll), c=word(rng, syll)), (f"c{len(items)}.{k}",))
                for k in range(rng.randint(5, 8))
            )
        opts = tuple(f.format(s=rng.randint(1, 2), a=word(rng, syll), b=word(rng, syll), c=word(rng, syll)) for f in rng.sample(OPTION, 3))
        items.append(Item(f"b{len(items)}", conv, (rng.choice(conv).ids[0],), rng.choice(CATEGORIES), opts, "inference_1", raw={}))
    return items, injected


def perturb(item: Item, rng: random.Random, syll: list[str], index: int) -> Item:
    conv = list(item.conversation)
    for _ in range(rng.randint(1, 3)):
        j = rng.randrange(len(conv))
        t = conv[j].text
        kind = rng.random()
        if kind < 0.5:  # change one syllable
            p = rng.randrange(len(t))
            t = t[:p] + rng.choice(syll) + t[p + 1:]
        elif kind < 0.8:  # punctuation / laughter
            t = t + rng.choice(["!", "?", " ㅋㅋ", "..."])
        else:  # spacing
            t = t.replace(" ", "  ", 1)
        conv[j] = dataclasses.replace(conv[j], text=t)
    return dataclasses.replace(item, id=f"b{index}", conversation=tuple(conv))


def score(dropped: list[dedup.Match], injected: dict[int, int]) -> tuple[float, float]:
    got = {m.index for m in dropped}
    tp = len(got & set(injected))
    return tp / max(len(injected), 1), tp / max(len(got), 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--dup-fraction", type=float, default=0.05)
    ap.add_argument("--subset", type=int, default=2000)
    ap.add_argument("--max-distance", type=int, default=5)
    args = ap.parse_args(argv)
    t = time.perf_counter()
    items, injected = make_items(args.n, args.dup_fraction)
    print(f"generated {len(items)} items ({len(injected)} injected near-duplicates, "
          f"{len({it.conversation_key for it in items})} conversations) in {time.perf_counter() - t:.1f}s")

    t0 = time.perf_counter()
    parts = [dedup.item_parts(it) for it in items]
    t1 = time.perf_counter()
    fps = dedup.part_fingerprints(parts)
    t2 = time.perf_counter()
    dropped = dedup.near_duplicates(fps, args.max_distance)
    t3 = time.perf_counter()
    total = t3 - t0
    recall, precision = score(dropped, injected)
    print(f"full set: {len(items)} items in {total:.1f}s = {len(items) / total:,.0f} items/s "
          f"(render {t1 - t0:.1f}s, fingerprints {t2 - t1:.1f}s, band index {t3 - t2:.1f}s); "
          f"dropped {len(dropped)}; recall {recall:.3f}, precision {precision:.3f} (k={args.max_distance})")

    sub = args.subset
    sub_inj = {i: j for i, j in injected.items() if i < sub}
    t = time.perf_counter()
    fast = dedup.near_duplicates(dedup.part_fingerprints(parts[:sub]), args.max_distance)
    t_fast = time.perf_counter() - t
    t = time.perf_counter()
    slow = dedup.pairwise_near_duplicates(dedup.part_fingerprints(parts[:sub]), args.max_distance)
    t_slow = time.perf_counter() - t
    same = [(m.index, m.other) for m in fast] == [(m.index, m.other) for m in slow]
    print(f"subset {sub}: band index {t_fast:.3f}s, pairwise O(n^2) {t_slow:.2f}s -> {t_slow / t_fast:,.0f}x faster; "
          f"same result: {same}; recall {score(fast, sub_inj)[0]:.3f}")
    print(f"pairwise extrapolated to {len(items)}: ~{t_slow * (len(items) / sub) ** 2 / 3600:,.1f} h")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
