"""Machine-readable results: what a run or a benchmark measured, with the machine and commit.

`make reproduce` writes outputs/<profile>/results.json; `make bench` writes
results/bench-<name>.json. `make results` (bench/render.py) copies the former into
results/ and renders all of them into BENCHMARKS.md and README.md's results table, so
no number in the docs is typed by hand.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from maerak.files import rel_path
from maerak.machine import machine

RESULTS_DIR = "results"  # under the repository root: the committed record the docs are rendered from


def reproduce_record(profile: Any, timings: dict[str, float], metrics: dict[str, Any] | None) -> dict[str, Any]:
    """One `make reproduce` run: profile, data, dev accuracy, wall time and per-step seconds."""
    dev = None if metrics is None else {k: metrics[k] for k in ("n", "correct", "accuracy")}
    if dev is not None:  # a collapsed model's accuracy is not a result: the table says so next to it
        dev["degenerate"] = list((metrics.get("degenerate") or {}).get("warnings", []))
    steps = {k: v for k, v in timings.items() if k != "total"}
    return {
        "kind": "reproduce",
        "name": profile.name,
        "command": f"make reproduce PROFILE={profile.name}",
        "data": rel_path(profile.path("data_dir"), profile.root),
        "scoring_mode": profile.scoring_mode,
        "dev": dev,
        "seconds": timings.get("total"),
        "steps": steps,
        "steps_reused": [k for k, v in steps.items() if v == 0.0],  # skipped: done earlier with the same inputs
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(profile.root),
    }


def bench_record(name: str, command: str, output: str, data: Any, seconds: float, root: Path) -> dict[str, Any]:
    """One benchmark script's run: its command, what it printed, its --json results if any."""
    return {"kind": "bench", "name": name, "command": command, "output": output, "results": data,
            "seconds": round(seconds, 1), "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": machine(root)}


def read_all(folder: Path) -> list[dict[str, Any]]:
    """Every results file in `folder`, sorted by kind and name."""
    records = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json"))]
    return sorted(records, key=lambda r: (r.get("kind", ""), r.get("name", "")))
