"""Run one benchmark script and keep what it measured, per CPU class.

  .venv/bin/python bench/record.py NAME [--json] -- bench/SCRIPT.py [ARGS...]

The record, results/bench-<name>-<cpu class>.json, holds the command, everything the script
printed, its own `--json` results when it has that option (`--json` here passes it a file), the
wall time and the machine (maerak/machine.py). `make results` renders the records into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from maerak.files import atomic_write_json  # noqa: E402
from maerak.results import RESULTS_DIR, bench_record  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("usage: bench/record.py NAME [--json] [--out DIR] -- SCRIPT [ARGS...]", file=sys.stderr)
        return 2
    cut = argv.index("--")
    p = argparse.ArgumentParser(prog="bench/record.py")
    p.add_argument("name")
    p.add_argument("--json", action="store_true", help="the script takes --json FILE: keep its results")
    p.add_argument("--out", type=Path, default=ROOT / RESULTS_DIR)
    args = p.parse_args(argv[:cut])
    script = argv[cut + 1:]
    with tempfile.TemporaryDirectory() as tmp:
        extra = ["--json", str(Path(tmp) / "r.json")] if args.json else []
        cmd = [sys.executable, *script, *extra]
        start = time.perf_counter()
        # stdout kept (and shown); stderr, where progress goes, passes straight through.
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        lines = []
        for line in proc.stdout:  # type: ignore[union-attr]
            sys.stdout.write(line)
            lines.append(line)
        if proc.wait() != 0:
            print(f"bench/record.py: {' '.join(script)} failed (exit {proc.returncode}); nothing recorded", file=sys.stderr)
            return proc.returncode
        seconds = time.perf_counter() - start
        data = json.loads((Path(tmp) / "r.json").read_text(encoding="utf-8")) if args.json else None
    command = ".venv/bin/python " + " ".join(script)
    record = bench_record(args.name, command, "".join(lines), data, seconds, ROOT)
    # One file per bench and CPU class: a speed holds for its class of CPU (maerak/machine.py cpu_class),
    # and a run on another class adds its own record instead of replacing this one.
    path = atomic_write_json(args.out / f"bench-{args.name}-{record['machine']['cpu_class']}.json", record)
    print(f"recorded: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
