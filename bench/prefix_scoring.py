"""Scoring speed: each request read on its own vs each shared prefix read once (inference/scoring.py).

Items with the official test file's shape (bench/official_shape.py: ~3 items a conversation,
~500-token conversations) scored by the embedded model, in one process, the methods interleaved
round by round (the best round counts):

  per-item  every request scored alone: its whole context, then its continuations on the cache
  shared    all requests at once: the prefix tree reads every shared prefix once
            (a conversation once for all its items; an item's question once for all its orders)

for options mode and for letters mode with TTA `all` (6 option orders), in float32 (and bfloat16 with
--dtypes float32 bfloat16).
Printed: the per-item / shared ratio per mode and dtype (target >= 2), whether both methods pick
the same option for every item, the float32 / bfloat16 ratio of the shared method, and how often
the two dtypes agree.

  .venv/bin/python bench/prefix_scoring.py [--model DIR] [--conversations N] [--letters-conversations N] [--repeat N]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.official_shape import synthetic_items  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def decisions(items, requests, lls) -> dict[str, int]:
    from inference.ensemble import argmax_first, item_probs

    return {iid: argmax_first(p) for iid, p in item_probs(items, requests, lls).items()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "gemma-3-270m")
    p.add_argument("--conversations", type=int, default=8, help="conversations for options mode (3 items each)")
    p.add_argument("--letters-conversations", type=int, default=3,
                   help="conversations for letters mode with TTA all (3 items, 6 orders each)")
    p.add_argument("--conversation-tokens", type=int, default=500)
    p.add_argument("--dtypes", nargs="+", default=["float32"],
                   help="float32 bfloat16 to compare (bf16 is fast only with AVX-512-BF16/AMX; the CPU line says)")
    p.add_argument("--repeat", type=int, default=2, help="rounds, the methods interleaved; the best of each counts")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    if not (args.model / "config.json").exists():
        print(f"no checkpoint at {args.model}: run `./run.sh model` first or pass --model DIR", file=sys.stderr)
        return 1

    import torch
    from transformers import AutoTokenizer

    from inference.scoring import Scorer
    from maerak.modes import LETTERS_MODE, OPTIONS_MODE

    tok = AutoTokenizer.from_pretrained(args.model)
    cases = {"options": (OPTIONS_MODE, "none", synthetic_items(tok, args.conversations, 3, args.conversation_tokens)),
             "letters tta all": (LETTERS_MODE, "all",
                                 synthetic_items(tok, args.letters_conversations, 3, args.conversation_tokens, seed=1))}
    rows, picks = {}, {}
    for dtype in args.dtypes:
        scorer = Scorer(args.model, dtype=dtype, batch_size=4, max_length=1024)
        for name, (mode, tta, items) in cases.items():
            reqs = mode.requests(items, mode.orders(tta))
            scorer.score(reqs[:2])  # warm-up: first-call kernel set-up is not throughput
            best = {"per-item": float("inf"), "shared": float("inf")}
            for _ in range(args.repeat):
                t, per_item = timed(lambda: [scorer.score([r])[0] for r in reqs])  # noqa: B023
                best["per-item"] = min(best["per-item"], t)
                t, shared = timed(lambda: scorer.score(reqs))  # noqa: B023
                best["shared"] = min(best["shared"], t)
            a, b = decisions(items, reqs, per_item), decisions(items, reqs, shared)
            diff = max(abs(x - y) for r, q in zip(per_item, shared) for x, y in zip(r, q))
            rows[(name, dtype)] = {"items": len(items), "requests": len(reqs), **best,
                                   "ratio": best["per-item"] / best["shared"],
                                   "same_decisions": sum(a[i] == b[i] for i in a), "max_abs_ll_diff": diff}
            picks[(name, dtype)] = b
            r = rows[(name, dtype)]
            print(f"  {name}, {dtype}: per-item {r['per-item']:.1f} s, shared {r['shared']:.1f} s", file=sys.stderr, flush=True)
        scorer.close()

    tokens = [len(tok(OPTIONS_MODE.request(it).context)["input_ids"]) for it in cases["options"][2]]
    from maerak.cpu_dtype import describe

    print(describe())
    print(f"model {args.model}, torch threads {torch.get_num_threads()}, best of {args.repeat}; options-mode contexts "
          f"{min(tokens)}-{max(tokens)} tokens (mean {sum(tokens) / len(tokens):.0f}), 3 items a conversation")
    print()
    print("| mode | dtype | items | requests | per-item s | shared s | per-item / shared | same decisions | max |Δ loglik| |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (name, dtype), r in rows.items():
        print(f"| {name} | {dtype} | {r['items']} | {r['requests']} | {r['per-item']:.1f} | {r['shared']:.1f} | "
              f"{r['ratio']:.2f}x | {r['same_decisions']}/{r['items']} | {r['max_abs_ll_diff']:.1e} |")
    print()
    for (name, dtype), r in rows.items():
        print(f"{name}, {dtype}: per-item / shared = {r['ratio']:.2f}x (target >= 2: {'met' if r['ratio'] >= 2 else 'NOT met'})"
              f"; same decisions {r['same_decisions']}/{r['items']}")
    agreement = {}
    if {"float32", "bfloat16"} <= set(args.dtypes):
        for name in cases:
            f, b = rows[(name, "float32")], rows[(name, "bfloat16")]
            same = sum(picks[(name, "float32")][i] == picks[(name, "bfloat16")][i] for i in picks[(name, "float32")])
            ratio, agree = f["shared"] / b["shared"], same / f["items"]
            agreement[name] = {"same": same, "items": f["items"], "ratio": ratio}
            verdict = ("bf16 scoring: faster with the same answers" if ratio > 1 and agree >= 0.99
                       else "stay float32: " + ("bf16 is not faster here" if ratio <= 1 else "answers differ on more than 1%"))
            print(f"{name}, shared: float32 / bfloat16 = {ratio:.2f}x; the two dtypes pick the same option for "
                  f"{same}/{f['items']} items ({agree:.1%}; target >= 99%): {verdict}")
    if args.json:
        args.json.write_text(json.dumps({"rows": {f"{k[0]}|{k[1]}": v for k, v in rows.items()},
                                         "dtype_agreement": agreement}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
