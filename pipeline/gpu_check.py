"""`make gpu-check`: every GPU-only path of the competition configs at tiny scale, on this host's GPU(s).

A table of (path, ok/FAILED/not run, seconds, peak GPU memory): the environment (pip check, torch's
arch list against the device, bitsandbytes' CUDA library, a C compiler and Python.h for Triton),
then the profile competition-orpo's own stage configs on a tiny random Gemma-2, through the
preflight's steps (pipeline/preflight.py) with only axolotl_configs/gpu_check.yml's size and budget
keys replaced: stage 1 (4-bit QLoRA, the LoRA kernel keys as configured), merge, stage 2 (bf16,
8-bit AdamW) stopped after a step with its checkpoint and resumed from it, stage 3 (ORPO, torchao
8-bit AdamW with bf16 stochastic rounding), scoring in bf16 with transformers, and with vLLM when
.venv-vllm exists (the two compared item by item); with 2+ GPUs, stage 2 under DeepSpeed ZeRO-3 on
2 of them, stopped and resumed. Minutes on one GPU (at most 8 by design; `--budget` stops starting
new steps past it). Without a CUDA GPU it says so in one line and exits 2.

Peak memory is nvidia-smi's memory.used, sampled every 0.2 s while a step runs (the training steps
run in child processes), the highest GPU's, MiB; it includes other processes on the GPU.
Usage: make gpu-check   (or: .venv/bin/python -m pipeline.gpu_check [--out outputs/gpu-check])
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from maerak import gpu
from maerak.profiles import ROOT, has_gpu

OVERRIDES = ROOT / "axolotl_configs" / "gpu_check.yml"
PROFILE = "competition-orpo"  # the competition configs with all three stages
OUT = "outputs/gpu-check"
VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"


@dataclass
class Row:
    path: str
    status: str = "not run"   # ok | FAILED | not run
    seconds: float | None = None
    peak_mib: int | None = None
    detail: str = ""


# ---------------------------------------------------------------- environment (pure: CI tests them)
def pip_check(python: str = sys.executable) -> str | None:
    """pip's own consistency check of the installed environment; None when it passes."""
    proc = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
    if proc.returncode == 0:
        return None
    lines = [x for x in (proc.stdout + proc.stderr).splitlines() if x.strip()]
    return f"pip check: {len(lines)} problem(s): " + " | ".join(lines[:3])


def compiler_problem(cc: str | None, include_dir: str | None) -> str | None:
    """Triton compiles a small launcher per kernel with the host's C compiler against Python.h."""
    missing = []
    if not cc:
        missing.append("a C compiler (cc/gcc: apt-get install gcc)")
    if not include_dir or not (Path(include_dir) / "Python.h").is_file():
        missing.append(f"Python.h in {include_dir} (the python3-dev package)")
    return None if not missing else "Triton needs " + " and ".join(missing)


def host_compiler() -> tuple[str | None, str | None]:
    return shutil.which("cc") or shutil.which("gcc"), sysconfig.get_paths().get("include")


def env_rows(dev: gpu.Device | None, python: str = sys.executable) -> list[Row]:
    """The environment rows; with no device only the host's own (pip, compiler)."""
    checks: list[tuple[str, Callable[[], str | None]]] = [
        ("env: pip check", lambda: pip_check(python)),
        ("env: C compiler + Python.h (Triton)", lambda: compiler_problem(*host_compiler())),
    ]
    if dev is not None:
        checks += [(f"env: {dev.name} sm_{gpu.sm(dev.capability)} in torch's arch list", lambda: gpu.arch_problem(dev)),
                   ("env: bitsandbytes' CUDA library", lambda: gpu.bnb_problem(dev)),
                   ("env: bf16", lambda: gpu.bf16_problem(dev, ["stages 1-3", "scoring"]))]
    rows = []
    for name, check in checks:
        start = time.perf_counter()
        problem = check()
        rows.append(Row(name, "FAILED" if problem else "ok", round(time.perf_counter() - start, 1), None, problem or ""))
    return rows


def table(rows: list[Row]) -> str:
    out = [f"{'path':<62} {'result':<8} {'seconds':>8} {'peak GPU MiB':>13}  detail", "-" * 110]
    for r in rows:
        sec = "" if r.seconds is None else f"{r.seconds:.1f}"
        mem = "" if r.peak_mib is None else str(r.peak_mib)
        out.append(f"{r.path:<62} {r.status:<8} {sec:>8} {mem:>13}  {r.detail[:300]}")
    return "\n".join(out)


# ---------------------------------------------------------------- the GPU side
class PeakMemory:
    """nvidia-smi's memory.used, the highest GPU, sampled in a thread while a step runs."""

    def __init__(self, every: float = 0.2):
        self.every, self.peak, self._stop = every, 0, threading.Event()

    @staticmethod
    def used() -> int:
        proc = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=10)
        return max((int(x) for x in proc.stdout.split() if x.strip().isdigit()), default=0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, self.used())
            except (OSError, subprocess.SubprocessError, ValueError):
                return
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def compare_scores(a: Path, b: Path) -> str:
    """Two submits' option probabilities (their .probs.json files), item by item: the answers that
    differ and the largest probability difference. A difference raises (the row fails)."""
    pa, pb = ({r["id"]: r for r in json.loads(p.read_text(encoding="utf-8"))["items"]} for p in (a, b))
    if set(pa) != set(pb):
        raise RuntimeError(f"{a.name} and {b.name} score different items")
    differ = [k for k in pa if pa[k]["prediction"] != pb[k]["prediction"]]
    worst = max((abs(x - y) for k in pa for x, y in zip(pa[k]["probs"], pb[k]["probs"])), default=0.0)
    if differ:
        raise RuntimeError(f"{len(differ)} of {len(pa)} answers differ (first: {differ[0]}); max |Δp| {worst:.4f}")
    return f"{len(pa)} items, same answers, max |Δp| {worst:.4f}"


def gpu_steps(out: str, n_gpus: int) -> list[tuple[str, Callable[[], str | None]]]:
    """The profile's configs through the preflight's own steps, on the GPU."""
    from inference.submit import probs_path
    from maerak.profiles import get_profile
    from pipeline import preflight as pf
    from training import axolotl_run as ar

    real = get_profile(PROFILE)
    overrides = pf.load_overrides(OVERRIDES)
    src = real.path("axolotl_configs")
    data, _ = pf.data_dir(real)
    root = real.root / out
    profile = pf.preflight_profile(real, root / "axolotl_configs", data, out)
    profile.apply_env()
    n_items = int((overrides.get("submit") or {}).get("items", 16))

    def score_transformers() -> str:
        return pf.step_submit(profile, real, n_items)

    def score_vllm() -> str:
        sub = profile.out / "submission_vllm.json"
        proc = subprocess.run([str(VLLM_PYTHON), "-m", "inference.submit", "--profile", real.name, "--backend", "vllm",
                               "--model", str(profile.final_dir), "--input", str(profile.out / "test_items.json"),
                               "--output", str(sub), "--no-cache", "--quiet"], cwd=real.root, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"vLLM submit exited {proc.returncode}: {(proc.stderr.strip().splitlines() or [''])[-1]}")
        return compare_scores(probs_path(profile.submission), probs_path(sub))

    def zero3_fresh() -> list[tuple[str, Callable[[], str | None]]]:
        return pf.stage2_several(profile, src, 2)

    steps: list[tuple[str, Callable[[], str | None]]] = [
        ("configs (competition-orpo + gpu_check.yml)",
         lambda: str(pf.write_configs(src, overrides, profile, Path(out) / "base"))),
        ("tiny Gemma-2 base", lambda: pf.build_base(real, overrides, root / "base")),
        ("prepare", lambda: pf.step_prepare(profile, overrides)),
        ("stage 1: 4-bit QLoRA, 8-bit AdamW, LoRA kernels as set", pf.stage_step(profile, 1, src, lambda: ar.train(profile, 1))),
        ("merge (legacy, bf16)", pf.stage_step(profile, 1, src, lambda: ar.merge(profile))),
        *[(f"stage 2: bf16 + 8-bit AdamW, {'save' if i == 0 else 'resume'}", fn)
          for i, (_, fn) in enumerate(pf.stage2_several(profile, src, 1))],
        ("stage 3: ORPO, torchao 8-bit AdamW + bf16 stochastic rounding",
         pf.stage_step(profile, 3, src, lambda: ar.train(profile, 3))),
        ("scoring: transformers, bf16", score_transformers),
    ]
    if VLLM_PYTHON.is_file():
        steps.append(("scoring: vLLM, compared item by item", score_vllm))
    if n_gpus >= 2:
        def wipe() -> str:
            shutil.rmtree(profile.stage2_dir, ignore_errors=True)  # the ZeRO-3 run starts stage 2 afresh
            return "stage 2 output removed"
        steps.append(("stage 2 (2 GPUs): clean", wipe))
        steps += [(f"stage 2: 2 GPUs, DeepSpeed ZeRO-3, {'save' if i == 0 else 'resume'}", fn)
                  for i, (_, fn) in enumerate(zero3_fresh())]
    return steps


def run(steps: list[tuple[str, Callable[[], str | None]]], budget: float) -> list[Row]:
    """Each step timed with its peak memory; after a failure or past the budget the rest are not run
    (each builds on the one before)."""
    rows, start, stop = [], time.perf_counter(), ""
    for name, fn in steps:
        row = Row(name)
        rows.append(row)
        if stop:
            row.detail = stop
            continue
        if time.perf_counter() - start > budget:
            stop = row.detail = f"past the {budget:.0f} s budget"
            continue
        print(f"=== gpu-check: {name}", flush=True)
        t0 = time.perf_counter()
        with PeakMemory() as mem:
            try:
                row.detail = str(fn() or "")
                row.status = "ok"
            except Exception as exc:  # noqa: BLE001 - the table names every failure and goes on
                row.status, row.detail = "FAILED", f"{type(exc).__name__}: {exc}".replace("\n", " ")
                stop = f"after '{name}' failed"
        row.seconds, row.peak_mib = round(time.perf_counter() - t0, 1), mem.peak or None
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make gpu-check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=OUT, help="where the tiny run writes (under the repository)")
    ap.add_argument("--budget", type=float, default=420, help="seconds after which no new step starts")
    args = ap.parse_args(argv)
    if not has_gpu():
        import torch

        print(f"gpu-check: no CUDA GPU visible to torch {torch.__version__} (CUDA {torch.version.cuda}): it runs the "
              f"GPU-only paths on a GPU; `make preflight` runs the configs on this machine's CPU", file=sys.stderr)
        return 2
    dev = gpu.probe()
    rows = env_rows(dev)
    shutil.rmtree(ROOT / args.out, ignore_errors=True)  # a fresh tiny run each time
    rows += run(gpu_steps(args.out, dev.count), args.budget)
    print("\n" + table(rows))
    total = sum(r.seconds or 0 for r in rows)
    failed = [r for r in rows if r.status != "ok"]
    print(f"\ngpu-check: {len(rows) - len(failed)} of {len(rows)} ok in {total:.0f} s on {dev.count} × {dev.name} "
          f"(torch {dev.torch_version}, CUDA {dev.cuda_version})")
    (ROOT / args.out).mkdir(parents=True, exist_ok=True)
    (ROOT / args.out / "gpu_check.json").write_text(json.dumps([r.__dict__ for r in rows], indent=1), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
