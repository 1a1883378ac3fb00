"""One line on what this CPU offers bfloat16 arithmetic: whether bf16 autocast can be a speed-up here.

torch's CPU build runs bf16 matrix products fast only on AVX-512-BF16 / AMX-BF16 hardware; on
an AVX2-only CPU it emulates them, and bf16 is several times slower than float32. Run as a
script it also times the kernels behind that choice (float32 vs bf16 autocast, one process):

  .venv/bin/python bench/cpu_features.py [--repeat N]
"""
from __future__ import annotations

from pathlib import Path

FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")


def cpu_info() -> tuple[str, set[str]]:
    """The first CPU's model name and flags, from /proc/cpuinfo (empty off Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "unknown CPU", set()
    fields = dict(ln.split(":", 1) for ln in lines if ":" in ln)  # last CPU wins; all are alike
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("model name", "unknown CPU"), set(fields.get("flags", "").split())


def describe() -> str:
    import torch

    model, flags = cpu_info()
    have = [f for f in FLAGS if f in flags]
    return (f"CPU: {model}; torch {torch.__version__} kernels {torch.backends.cpu.get_cpu_capability()}; "
            f"bf16 hardware: {', '.join(have) if have else 'none (no AVX-512-BF16/AMX: bf16 is emulated)'}")


def timed_best(fn, repeat: int) -> float:
    import time

    fn()  # warm-up: first-call kernel selection is not throughput
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    """The kernels behind the choice: one gemma-3-270m MLP projection (640 → 2048) on 4 rows of
    520 tokens, forward + backward, float32 vs bfloat16 autocast (fp32 weights), in one process."""
    import argparse

    import torch

    p = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    layer = torch.nn.Linear(640, 2048, bias=False)
    x = torch.randn(4 * 520, 640, requires_grad=True)

    def step(bf16: bool) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = layer(x)
        y.float().square().mean().backward()

    fp32 = timed_best(lambda: step(False), args.repeat)
    bf16 = timed_best(lambda: step(True), args.repeat)
    print(describe())
    print(f"640x2048 linear, 2080 tokens, fwd+bwd, best of {args.repeat}: float32 {fp32 * 1e3:.1f} ms, "
          f"bf16 autocast {bf16 * 1e3:.1f} ms; float32 / bf16 = {fp32 / bf16:.2f}x "
          f"({'bf16 faster' if bf16 < fp32 else 'bf16 SLOWER: keep float32 on this CPU'})")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
