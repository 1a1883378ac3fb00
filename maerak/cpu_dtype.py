"""`dtype: auto` on CPU: float32, or bfloat16 autocast over float32 master weights, by a measurement.

torch's CPU build runs bf16 matrix products fast only on AVX-512-BF16 / AMX-BF16 hardware; on an
AVX2-only CPU it emulates them and bf16 autocast is many times slower than float32 (training/README.md
"bf16 on CPU"). So the choice is measured, not guessed from flags: the kernel that decides it, one
gemma-3-270m MLP projection (640 -> 2048) forward + backward on 256 tokens, float32 vs bf16
autocast, the two alternating, best of 12 calls each on one thread by its CPU clock (about a
second; a few on an AVX2 CPU, where bf16 is emulated). bf16 is chosen when it is faster by MARGIN.

One decision per CPU: it is written to a cache file keyed by the CPU model, its flags, torch's
version and its kernel level (`cpu_key`), and every later verb and re-run on that machine reads it
back, so a noisy re-measurement never flips a run's dtype (two runs on one machine write the same
bytes). A run moved to another CPU measures again; the chosen dtype is part of the stamps'
environment (`environment`), so what it changes is redone, and the manifest records the choice.
`dtype: float32` / `dtype: bfloat16` pin it without measuring.

  .venv/bin/python -m maerak.cpu_dtype   # measure here and print the choice (no cache)
"""
from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from maerak.files import atomic_write_json
from maerak.machine import cpu_info  # one reader of /proc/cpuinfo

FLAGS = ("avx512_bf16", "amx_bf16", "amx_tile")
DTYPES = ("float32", "bfloat16")
SETTINGS = ("auto", *DTYPES)
# bf16 must beat float32 on the probe kernel by 25%: the kernel is the part bf16 speeds up, and a
# whole step speeds up less (norms, softmax, AdamW stay float32: the AVX-512-BF16 CPU had
# 1.91x on this kernel and 1.47x on the whole step); below 1.25x the gain would be within noise of
# the measurement and not worth bf16's rounding. Either side of it the CPUs measured are far away
# (AVX2: 0.05x; AVX-512-BF16: 1.91x; AMX: more).
MARGIN = 1.25
TOKENS, IN_FEATURES, OUT_FEATURES = 256, 640, 2048  # half an official-shape row through a gemma-3-270m MLP projection
ROUNDS = 12  # calls of each dtype, alternating: under a second on a bf16 CPU


@dataclass(frozen=True)
class Choice:
    dtype: str            # float32 | bfloat16
    source: str           # pinned | measured | cached
    ratio: float | None   # float32 time / bf16 time on the probe kernel (None when pinned)
    reason: str

    def line(self) -> str:
        return f"dtype: {self.dtype} ({self.source}; {self.reason})"


def describe() -> str:
    import torch

    model, flags = cpu_info()
    have = [f for f in FLAGS if f in flags]
    return (f"CPU: {model}; torch {torch.__version__} kernels {torch.backends.cpu.get_cpu_capability()}; "
            f"bf16 hardware: {', '.join(have) if have else 'none (no AVX-512-BF16/AMX: bf16 is emulated)'}")


def cpu_key() -> str:
    """What the decision depends on: the CPU model and flags, torch's version and its kernel level."""
    import torch

    model, flags = cpu_info()
    text = json.dumps([model, sorted(flags), torch.__version__, torch.backends.cpu.get_cpu_capability()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def measure(rounds: int = ROUNDS, tokens: int = TOKENS) -> tuple[float, float]:
    """CPU seconds of the probe kernel (forward + backward), float32 and bf16 autocast (float32
    weights): the best of `rounds` calls each, the two alternating, after a warm-up of each
    (first-call kernel selection is not throughput). Timed on one torch thread by that thread's CPU
    clock: the ratio is a property of the core's vector units, and the CPU clock does not count the
    time another job holds the core. Wall-clock timings with two threads on a busy 2-core machine
    gave 0.4x-5.9x on one AVX-512-BF16 CPU; this gave 1.88-1.90x there under the same load. Stops after
    3 rounds when bf16 is over 4x slower (emulated bf16: no noise brings it back within the margin)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(OUT_FEATURES, IN_FEATURES, generator=gen).requires_grad_()
    x = torch.randn(tokens, IN_FEATURES, generator=gen, requires_grad=True)

    def step(bf16: bool) -> float:
        start = time.thread_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            y = torch.nn.functional.linear(x, weight)
        y.float().square().mean().backward()
        weight.grad = x.grad = None
        return time.thread_time() - start

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        step(False), step(True)
        fp32 = bf16 = math.inf
        for done in range(1, rounds + 1):
            fp32 = min(fp32, step(False))
            bf16 = min(bf16, step(True))
            if done >= 3 and bf16 > 4 * fp32:
                break
    finally:
        torch.set_num_threads(threads)
    return fp32, bf16


def decide(fp32_s: float, bf16_s: float, margin: float = MARGIN) -> Choice:
    """The choice from the two timings (pure). A timing that is not a finite positive number
    decides nothing: float32, with the reason said."""
    if not all(isinstance(t, (int, float)) and math.isfinite(t) and t > 0 for t in (fp32_s, bf16_s)):
        return Choice("float32", "measured", None,
                      f"the probe's timings are not finite positive numbers (float32 {fp32_s!r} s, bf16 {bf16_s!r} s): "
                      "float32, the safe choice")
    ratio = fp32_s / bf16_s
    if ratio >= margin:
        return Choice("bfloat16", "measured", ratio,
                      f"float32 / bf16 autocast = {ratio:.2f}x on the probe kernel >= {margin}: bf16 autocast, float32 master weights")
    return Choice("float32", "measured", ratio,
                  f"float32 / bf16 autocast = {ratio:.2f}x on the probe kernel < {margin}: float32")


def cache_file(cache_dir: Path) -> Path:
    return cache_dir / f"cpu-{cpu_key()}.json"


def resolve(setting: str, cache_dir: Path | None, probe: Callable[[], tuple[float, float]] | None = None,
            log: Callable[[str], None] = print) -> Choice:
    """The dtype for `setting` (auto | float32 | bfloat16) on this machine; auto is measured once per
    CPU (cached under `cache_dir`, keyed by `cpu_key`) and the choice printed with its ratio."""
    if setting not in SETTINGS:
        raise ValueError(f"dtype: {setting!r} is not one of {', '.join(SETTINGS)}")
    if setting != "auto":
        return Choice(setting, "pinned", None, "set in the config")
    import torch

    if torch.cuda.is_available():  # the CUDA profiles state their dtype; auto there is the GPU's bf16 support
        dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
        return Choice(dtype, "measured", None, "CUDA device: bf16 where the GPU supports it")
    path = cache_file(cache_dir) if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            choice = Choice(saved["dtype"], "cached", saved["ratio"], saved["reason"])
            if choice.dtype in DTYPES:
                log(f"{choice.line()}; decided on this CPU before: {path})")
                return choice
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: measure again and rewrite it
    fp32_s, bf16_s = (probe or measure)()
    choice = decide(fp32_s, bf16_s)
    log(f"{choice.line()}; probe: float32 {fp32_s * 1e3:.1f} ms, bf16 autocast {bf16_s * 1e3:.1f} ms; {describe()}")
    if path is not None and choice.ratio is not None:  # a probe that measured nothing usable is not remembered
        atomic_write_json(path, {**asdict(choice), "source": "measured", "cpu_key": cpu_key(), "cpu": describe(),
                                 "float32_s": fp32_s, "bfloat16_s": bf16_s})
    return choice


CACHE_DIR = "cpu_dtype"  # under the profile's output folder: `make clean` forgets the decision with the rest


def training_setting(cfg: dict) -> str:
    """A stage YAML's precision as a dtype setting: `bf16: auto` | true | false (or unset)."""
    value = cfg.get("bf16")
    return "auto" if value == "auto" else "bfloat16" if value is True else "float32"


def profile_choices(profile, log: Callable[[str], None] = print) -> dict[str, Choice]:
    """The dtype of each training stage (`stage<N>`) and of scoring (`score`) for a profile
    (maerak/profiles.py Profile) on this machine; `auto` ones measured once per CPU (`resolve`)."""
    cache = profile.out / CACHE_DIR
    settings = {f"stage{n}": training_setting(profile.stage_config(n))
                for n in (profile.training_stages if profile.has_stage_configs else ())}
    settings["score"] = profile.config.scoring.dtype
    choices, shown = {}, False
    for name, setting in settings.items():
        if setting not in SETTINGS:  # float16: a GPU profile's pinned dtype
            choices[name] = Choice(setting, "pinned", None, "set in the config")
            continue
        choices[name] = resolve(setting, cache, log=log if setting == "auto" and not shown else (lambda _: None))
        shown = shown or setting == "auto"
    return choices


def environment(choices: dict[str, Choice]) -> str:
    """The dtypes `auto` chose, for the stamps' environment: a run moved to a CPU where the choice
    differs redoes the steps; the same choice (e.g. float32 on two AVX2 CPUs) does not. Pinned
    dtypes are left out: they are in the config files the stamps already hash ("" when none is auto)."""
    return ";".join(f"{name}={c.dtype}" for name, c in sorted(choices.items()) if c.source != "pinned")


def main() -> int:
    choice = resolve("auto", None)
    print(f"float32 / bf16 = {choice.ratio:.2f}x" if choice.ratio is not None else "no ratio")
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
