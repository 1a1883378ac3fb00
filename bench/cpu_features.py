"""One line on what this CPU offers bfloat16 arithmetic, and the probe behind `dtype: auto`.

torch's CPU build runs bf16 matrix products fast only on AVX-512-BF16 / AMX-BF16 hardware; on
an AVX2-only CPU it emulates them, and bf16 is several times slower than float32. This runs the
measurement `dtype: auto` decides by (maerak/cpu_dtype.py: float32 vs bf16 autocast on one
gemma-3-270m MLP projection, forward + backward, one process) and prints the ratio and the choice,
without reading or writing the per-CPU cache:

  .venv/bin/python bench/cpu_features.py [--rounds N] [--tokens N] [--json FILE]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from maerak.cpu_dtype import IN_FEATURES, MARGIN, OUT_FEATURES, ROUNDS, TOKENS, decide, describe, measure  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=ROUNDS, help=f"calls of each dtype, alternating (default {ROUNDS}, as `auto`)")
    p.add_argument("--tokens", type=int, default=TOKENS, help=f"rows of the probe's input (default {TOKENS}, as `auto`)")
    p.add_argument("--json", type=Path, default=None, help="also write the timings and the choice here")
    args = p.parse_args(argv)
    fp32, bf16 = measure(args.rounds, args.tokens)
    choice = decide(fp32, bf16)
    print(describe())
    print(f"{IN_FEATURES}x{OUT_FEATURES} linear, {args.tokens} tokens, fwd+bwd, one thread, CPU time, alternating, best of {args.rounds}: float32 {fp32 * 1e3:.1f} ms, "
          f"bf16 autocast {bf16 * 1e3:.1f} ms; float32 / bf16 = {fp32 / bf16:.2f}x")
    print(f"dtype: auto chooses {choice.dtype} here (bf16 when float32 / bf16 >= {MARGIN})")
    if args.json:
        args.json.write_text(json.dumps({"float32_s": fp32, "bfloat16_s": bf16, "tokens": args.tokens,
                                         "ratio": choice.ratio, "dtype": choice.dtype}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
