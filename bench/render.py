"""Render the results files into the docs: `make results`.

  .venv/bin/python bench/render.py [--check]

1. copies each outputs/<profile>/results.json (written by `make reproduce`) to
   results/reproduce-<profile>.json, the committed record;
2. renders every results/*.json into BENCHMARKS.md (whole file) and README.md's results
   table (between the RESULTS markers).
`--check`: change nothing, exit 1 if the docs differ from what the results render to.
No number in those tables is typed by hand; each row names the file it came from.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from maerak.files import atomic_write_text  # noqa: E402
from maerak.machine import cpu_class, summary  # noqa: E402
from maerak.results import RESULTS_DIR, read_all  # noqa: E402

BEGIN, END = "<!-- RESULTS:BEGIN (make results) -->", "<!-- RESULTS:END -->"


def collect(root: Path) -> list[Path]:
    """outputs/*/results.json -> results/reproduce-<profile>.json where they differ; returns those copied."""
    copied = []
    for src in sorted((root / "outputs").glob("*/results.json")):
        record = json.loads(src.read_text(encoding="utf-8"))
        dst = root / RESULTS_DIR / f"reproduce-{record['name']}.json"
        text = src.read_text(encoding="utf-8")
        if not dst.is_file() or dst.read_text(encoding="utf-8") != text:
            atomic_write_text(dst, text)
            copied.append(dst)
    return copied


def commit(m: dict[str, Any]) -> str:
    git = m.get("git") or {}
    c = git.get("commit")
    return "unknown" if not c else c[:10] + ("+dirty" if git.get("dirty") else "")


def minutes(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def accuracy(dev: dict[str, Any] | None) -> str:
    if not dev or dev.get("accuracy") is None:
        return "n/a"
    text = f"{100 * dev['accuracy']:.1f}% ({dev['correct']}/{dev['n']})"
    warnings = dev.get("degenerate") or []
    return text + "".join(f"; **{w.removeprefix('WARNING: ')}**" for w in warnings)


def wall(r: dict[str, Any]) -> str:
    reused = r.get("steps_reused") or []
    return minutes(r.get("seconds")) + (f" ({len(reused)} of {len(r['steps'])} steps reused)" if reused else "")


def results_table(records: list[dict[str, Any]]) -> str:
    rows = [r for r in records if r.get("kind") == "reproduce"]
    if not rows:
        return "No `make reproduce` result recorded yet (`make reproduce`, then `make results`).\n"
    lines = ["| profile | data | dev accuracy | wall time | machine | commit | file |", "|---|---|---:|---:|---|---|---|"]
    for r in rows:
        m = r["machine"]
        lines.append(f"| `{r['name']}` | `{r['data']}` | {accuracy(r['dev'])} | {wall(r)} | {summary(m)} "
                     f"| `{commit(m)}` | [{RESULTS_DIR}/reproduce-{r['name']}.json]({RESULTS_DIR}/reproduce-{r['name']}.json) |")
    return "\n".join(lines) + "\n"


def record_class(r: dict[str, Any]) -> str:
    m = r["machine"]
    return m.get("cpu_class") or cpu_class(m.get("cpu_flags") or [])


def bench_file(r: dict[str, Any]) -> str:
    return f"{RESULTS_DIR}/bench-{r['name']}-{record_class(r)}.json"


# The benches the official-cpu arithmetic reads (Makefile `bench`): the dtype probe, a stage-2 step
# at official shape in both dtypes, and scoring official-shape items in both dtypes.
PROBE, TRAIN, SCORE = "cpu_features", "train_step_official", "prefix_scoring"


def official_cpu_minutes(probe: dict[str, Any], train: dict[str, Any], score: dict[str, Any]) -> dict[str, Any]:
    """official-cpu on the official files' sizes, priced by one CPU class's bench results: the dtype
    `auto` chooses there (maerak/cpu_dtype.py decide on the probe's timings), the stage plans from
    the profile's own YAMLs (maerak/budget.py), seconds per stage-2 step and per scored item in that dtype."""
    from bench.official_shape import OFFICIAL_ITEMS
    from maerak import budget
    from maerak.cpu_dtype import decide
    from maerak.profiles import get_profile

    choice = decide(probe["float32_s"], probe["bfloat16_s"])
    profile = get_profile("official-cpu", ROOT)  # the YAMLs of this checkout
    mode = {"float32": "answer", "bfloat16": "autocast"}[choice.dtype]  # train_step's name for each dtype
    step_s = train["best"][mode]["step_s"]
    shared = score["rows"][f"options|{choice.dtype}"]
    rates = budget.Rates(step_s / train["batch_size"], shared["shared"] / shared["items"], choice.dtype, choice.dtype, "bench")
    stages = tuple(budget.stage_plan(n, profile.stage_config(n), OFFICIAL_ITEMS["train"]) for n in profile.training_stages)
    skipped = tuple(n for n in (1, 2, 3) if n not in profile.training_stages)
    est = budget.estimate(stages, skipped, OFFICIAL_ITEMS["dev"] + OFFICIAL_ITEMS["test"], rates)
    epoch = budget.stage_plan(2, {**profile.stage_config(2), "num_epochs": 1, "max_steps": None}, OFFICIAL_ITEMS["train"])
    return {"choice": choice, "estimate": est, "epoch_s": epoch.sequences * rates.train_s_per_row,
            "step_ratio": train["best"]["answer"]["step_s"] / train["best"]["autocast"]["step_s"],
            "agreement": score.get("dtype_agreement", {}).get("options")}


CLASS_INTRO = ("What `dtype: auto` chooses on each class of CPU the benches ran on (`make bench BENCH=official`), and the "
               "minutes an official-cpu run (its YAMLs as configured) takes on the official files' sizes "
               "(bench/official_shape.py `OFFICIAL_ITEMS`), priced by that class's own records: seconds per stage-2 step "
               "at official shape and per scored item, in the chosen dtype (bench/render.py `official_cpu_minutes`; "
               "model loading and prepare not included).")


def readme_block(records: list[dict[str, Any]]) -> str:
    """README.md's results: the runs, then official-cpu per CPU class."""
    return results_table(records) + "\n**official-cpu per CPU class.** " + CLASS_INTRO + "\n\n" + cpu_class_table(records)


def cpu_class_table(records: list[dict[str, Any]]) -> str:
    """One row per CPU class with bench records: what `dtype: auto` chooses there and what an official-cpu
    run on the official files' sizes costs, from that class's own measurements (none typed)."""
    by_class: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        if r.get("kind") == "bench":
            by_class.setdefault(record_class(r), {})[r["name"]] = r
    lines = ["| CPU class | probe float32 / bf16 | `auto` chooses | stage-2 step float32 / bf16 | scoring float32 / bf16 "
             "(same answers) | official-cpu as configured | one more stage-2 epoch | records |",
             "|---|---:|---|---:|---:|---:|---:|---|"]
    for cls, recs in sorted(by_class.items()):
        found = [recs[n] for n in (PROBE, TRAIN, SCORE) if n in recs and recs[n].get("results")]
        links = ", ".join(f"[{n}]({bench_file(recs[n])})" for n in (PROBE, TRAIN, SCORE) if n in recs)
        if len(found) < 3:
            probe = recs.get(PROBE, {}).get("results")
            ratio = f"{probe['ratio']:.2f}x" if probe and probe.get("ratio") else "n/a"
            chosen = probe["dtype"] if probe else "n/a"
            missing = ", ".join(n for n in (PROBE, TRAIN, SCORE) if n not in recs or not recs[n].get("results"))
            lines.append(f"| {cls} | {ratio} | {chosen} | not measured ({missing}: `make bench` on such a CPU) | | | | {links} |")
            continue
        probe, train, score = (r["results"] for r in found)
        got = official_cpu_minutes(probe, train, score)
        est, agree = got["estimate"], got["agreement"]
        scoring = f"{agree['ratio']:.2f}x ({agree['same']}/{agree['items']})" if agree else "n/a"
        lines.append(f"| {cls} | {got['choice'].ratio:.2f}x | {got['choice'].dtype} | {got['step_ratio']:.2f}x "
                     f"| {scoring} | {minutes(est.seconds)} | {minutes(got['epoch_s'])} | {links} |")
        lines.append(f"| | | | | | {est.line().removeprefix('budget: ')} | | |")
    return "\n".join(lines) + "\n"


def benchmarks_md(records: list[dict[str, Any]]) -> str:
    out = ["# Benchmarks and runs", "",
           "Generated by `make results` (bench/render.py) from `results/*.json`; do not edit by hand.",
           "`make bench` and `make reproduce` write those files (with the machine and the commit).", "",
           "## Pipeline runs (`make reproduce`)", "", results_table(records)]
    for r in (r for r in records if r.get("kind") == "reproduce"):
        out += [f"### `{r['name']}`: seconds per step", "", "| step | seconds |", "|---|---:|"]
        out += [f"| {k} | {v:.1f}{' (reused)' if k in (r.get('steps_reused') or []) else ''} |" for k, v in r["steps"].items()]
        out += [f"| **total** | **{r['seconds']:.1f}** |", "", f"`{r['command']}`, finished {r['finished_utc']}; "
                f"torch {r['machine']['torch']}, Python {r['machine']['python']}.", ""]
    benches = [r for r in records if r.get("kind") == "bench"]
    out += ["## official-cpu per CPU class", "", CLASS_INTRO, "", cpu_class_table(records)]
    out += ["## Benchmarks (`make bench`)", ""]
    if not benches:
        out += ["No benchmark recorded yet (`make bench`).", ""]
    for r in benches:
        m = r["machine"]
        out += [f"### {r['name']} ({record_class(r)})", "", f"`{r['command']}` — {r['seconds']:.0f} s, finished {r['finished_utc']}, "
                f"commit `{commit(m)}`; {summary(m)}, CPU flags {', '.join(m['cpu_flags']) or 'none listed'}, "
                f"torch {m['torch']}. Record: [{bench_file(r)}]({bench_file(r)}).",
                "", "```", r["output"].rstrip("\n"), "```", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def with_table(readme: str, table: str) -> str:
    """README.md with the text between the markers replaced; a README without both markers is an error."""
    b, e = readme.find(BEGIN), readme.find(END)
    if b < 0 or e < b:
        raise ValueError(f"README.md: no `{BEGIN}` … `{END}` block to render the results table into")
    return readme[: b + len(BEGIN)] + "\n" + table + readme[e:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench/render.py", description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the docs are not what the results render to")
    p.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    root = args.root
    if not args.check:
        for path in collect(root):
            print(f"recorded {path.relative_to(root)}")
    records = read_all(root / RESULTS_DIR)
    readme_path, bench_path = root / "README.md", root / "BENCHMARKS.md"
    try:
        readme = with_table(readme_path.read_text(encoding="utf-8"), readme_block(records))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    wanted = {readme_path: readme, bench_path: benchmarks_md(records)}
    stale = [p for p, text in wanted.items() if not p.is_file() or p.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(root)}: not what `make results` renders from {RESULTS_DIR}/", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        atomic_write_text(path, wanted[path])
        print(f"rendered {path.relative_to(root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
