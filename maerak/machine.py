"""The machine a number was measured on, recorded next to the number (results files, bench).

CPU model and the flags that decide kernel speed (AVX2, AVX-512, bf16 hardware), cores,
torch and the CPU kernel level it dispatches to, GPUs, and the commit: a timing or an
accuracy means little without them.
"""
from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

# The flags that change which kernels torch runs (and whether bf16 is emulated).
FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_class(flags) -> str:
    """The class of CPU a speed number holds for: what bf16 hardware it has (AMX-BF16, AVX-512-BF16)
    or else its widest vector unit. Machines of one kind differ in this (the project has met all three
    of amx_bf16, avx512_bf16 and avx2), and bf16 is 20x slower or 1.5-2x faster depending on it."""
    flags = set(flags)
    for name in ("amx_bf16", "avx512_bf16", "avx512f", "avx2"):
        if name in flags:
            return name
    return "other"


def cpu_info() -> tuple[str, set[str]]:
    """The first CPU's model name and flags, from /proc/cpuinfo (empty off Linux)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return "unknown CPU", set()
    fields = dict(ln.split(":", 1) for ln in lines if ":" in ln)  # last CPU wins; all are alike
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    return fields.get("model name", "unknown CPU"), set(fields.get("flags", "").split())


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1 << 20), 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine(root: Path) -> dict[str, Any]:
    """What the results were measured on; `root`: the repository, for its commit."""
    import torch

    model, flags = cpu_info()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "cpu": model,
        "cpu_flags": [f for f in FLAGS if f in flags],
        "cpu_class": cpu_class(flags),
        "cores": usable,
        "memory_gib": _memory_gib(),
        "torch": torch.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.version.cuda,
        "gpus": gpus,
        "python": platform.python_version(),
        # Other jobs on the same cores slow a timing: the 1-minute load average when it was recorded.
        "load_average": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
        "git": git_state(root),
    }


def summary(m: dict[str, Any]) -> str:
    """One line for a table cell: CPU (kernel level), cores, GPU."""
    gpu = ", ".join(m.get("gpus") or []) or "no GPU"
    load = f", load {m['load_average']}" if m.get("load_average") is not None else ""
    return f"{m['cpu']} ({m['torch_cpu_capability']}), {m['cores']} cores, {gpu}{load}"


def git_state(root: Path) -> dict[str, Any]:
    """The commit of the code that ran; inside the image (no .git) the one baked in at build time."""
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"commit": commit, "dirty": bool(status.strip()), "source": "git"}
    except (OSError, subprocess.SubprocessError):
        env = os.environ.get("MAERAK_GIT_COMMIT")
        if env and env != "unknown":
            return {"commit": env, "dirty": None, "source": "image build arg GIT_COMMIT"}
        return {"commit": None, "dirty": None, "source": "not available"}
