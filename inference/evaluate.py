"""`./run.sh evaluate`: accuracy overall and per category, with a report.

Pure metric functions (`compute_metrics`, `agreement`) take predictions and gold
labels and return dicts; `write_report` turns those dicts into report.md,
metrics.json, wrong_ids.txt and PNG plots (matplotlib, Agg backend).
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inference.curves import png_bytes as _png
from inference.curves import render_curves
from inference.degenerate import degeneracy
from maerak.files import dumps_json, write_together
from maerak.profiles import resolve_profile
from maerak.schema import CATEGORIES, LABELS, DataError, Item, Problem, load_items, one_line, read_json


# ---------------------------------------------------------------- pure metrics
def _ratio(a: int, b: int) -> float | None:
    return a / b if b else None


def compute_metrics(pred: Mapping[str, str], gold: Sequence[Item],
                    probs: Mapping[str, Sequence[float]] | None = None) -> dict[str, Any]:
    """Accuracy over the gold items. A gold item with no (or an invalid) prediction counts as wrong."""
    n = len(gold)
    correct = 0
    per_cat: dict[str, dict[str, Any]] = {}
    confusion = [[0, 0, 0] for _ in range(3)]  # rows: gold option, cols: predicted option
    pred_counts = {lab: 0 for lab in LABELS}
    gold_counts = {lab: 0 for lab in LABELS}
    wrong: list[str] = []
    missing: list[str] = []
    for it in gold:
        p = pred.get(it.id)
        c = per_cat.setdefault(it.category, {"n": 0, "correct": 0})
        c["n"] += 1
        gold_counts[it.label] += 1
        if p not in LABELS:
            missing.append(it.id)
            wrong.append(it.id)
            continue
        pred_counts[p] += 1
        confusion[LABELS.index(it.label)][LABELS.index(p)] += 1
        if p == it.label:
            correct += 1
            c["correct"] += 1
        else:
            wrong.append(it.id)
    order = [c for c in CATEGORIES if c in per_cat] + sorted(c for c in per_cat if c not in CATEGORIES)
    per_category = {c: {**per_cat[c], "accuracy": _ratio(per_cat[c]["correct"], per_cat[c]["n"])} for c in order}
    gold_ids = {it.id for it in gold}
    out: dict[str, Any] = {
        "n": n,
        "correct": correct,
        "accuracy": _ratio(correct, n),
        "per_category": per_category,
        "confusion": {"rows_gold_cols_pred": list(LABELS), "matrix": confusion},
        "position_bias": {"predicted": pred_counts, "gold": gold_counts},
        "wrong_ids": wrong,
        "missing_predictions": missing,
        "extra_predictions": sorted(k for k in pred if k not in gold_ids),
    }
    if probs is not None:
        out["margin"] = margin_stats(pred, gold, probs)
    predicted = [pred[it.id] for it in gold if pred.get(it.id) in LABELS]
    vectors = [probs[it.id] for it in gold if it.id in probs] if probs is not None else None
    out["degenerate"] = degeneracy(predicted, vectors, gold_counts)
    return out


def margin_stats(pred: Mapping[str, str], gold: Sequence[Item], probs: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    """Margin = top probability minus the second; also the probability given to the gold option."""
    def mean(xs: list[float]) -> float | None:
        return sum(xs) / len(xs) if xs else None

    all_m, right_m, wrong_m, gold_p = [], [], [], []
    for it in gold:
        if it.id not in probs:
            continue
        p = sorted(probs[it.id], reverse=True)
        m = p[0] - p[1]
        all_m.append(m)
        gold_p.append(probs[it.id][LABELS.index(it.label)])
        (right_m if pred.get(it.id) == it.label else wrong_m).append(m)
    return {"n": len(all_m), "mean_margin": mean(all_m), "mean_margin_correct": mean(right_m),
            "mean_margin_wrong": mean(wrong_m), "mean_gold_probability": mean(gold_p), "margins": all_m}


def agreement(pred_a: Mapping[str, str], pred_b: Mapping[str, str], gold: Sequence[Item]) -> dict[str, Any]:
    """How two prediction sets agree on the gold items (and who is right where they differ)."""
    table = {"both_correct": 0, "only_a_correct": 0, "only_b_correct": 0, "both_wrong_same": 0,
             "both_wrong_different": 0}
    same = 0
    labels = [[0, 0, 0] for _ in range(3)]  # rows: a's choice, cols: b's choice
    for it in gold:
        a, b = pred_a.get(it.id), pred_b.get(it.id)
        ra, rb = a == it.label, b == it.label
        valid_same = a == b and a in LABELS  # two missing predictions do not "agree"
        if valid_same:
            same += 1
        if ra and rb:
            table["both_correct"] += 1
        elif ra:
            table["only_a_correct"] += 1
        elif rb:
            table["only_b_correct"] += 1
        elif valid_same:
            table["both_wrong_same"] += 1
        else:
            table["both_wrong_different"] += 1
        if a in LABELS and b in LABELS:
            labels[LABELS.index(a)][LABELS.index(b)] += 1
    return {"n": len(gold), "agree": same, "agreement": _ratio(same, len(gold)), **table,
            "choices": {"rows_a_cols_b": list(LABELS), "matrix": labels}}


# ---------------------------------------------------------------- file edges
def read_predictions(path: Path) -> dict[str, str]:
    data = read_json(path)
    if not isinstance(data, list):
        raise DataError([Problem(str(path), "-", "file", f"expected a JSON array of predictions, got {type(data).__name__}")])
    for n, r in enumerate(data):
        if not isinstance(r, dict) or not isinstance(r.get("id"), str):
            raise DataError([Problem(str(path), f"item #{n}", "id", "missing, or the item is not an object with a string id")])
    return {r["id"]: r.get("output", "") for r in data}


def read_probs(pred_path: Path) -> dict[str, list[float]] | None:
    data = _probs_file(pred_path)
    if data is None:
        return None
    path = pred_path.with_name(pred_path.stem + ".probs.json")
    try:
        return {r["id"]: [float(x) for x in r["probs"]] for r in data.get("items", [])}
    except (AttributeError, KeyError, TypeError, ValueError):
        raise DataError([Problem(str(path), "-", "items", "not a probabilities file written by submit")]) from None


def _probs_file(pred_path: Path) -> Any:
    path = pred_path.with_name(pred_path.stem + ".probs.json")
    return read_json(path) if path.exists() else None


def read_scoring(pred_path: Path) -> dict[str, Any] | None:
    """How submit scored the predictions (mode, tta, ensemble: its .probs.json), for the report."""
    data = _probs_file(pred_path)
    if not isinstance(data, dict) or "mode" not in data:
        return None
    return {k: data[k] for k in ("mode", "tta", "ensemble") if k in data}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def render_plots(metrics: dict[str, Any]) -> dict[str, bytes]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["font.family"] = "DejaVu Sans"
    written: dict[str, bytes] = {}
    # Category names are Hangul; DejaVu has no Hangul glyphs, so axis labels use romanised names.
    roman = {"원인": "cause", "후행사건": "subsequent", "전제": "premise", "동기": "motivation", "반응": "reaction"}

    def save(fig, name):
        written[name] = _png(fig)
        plt.close(fig)

    cats = list(metrics["per_category"])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    accs = [100 * (metrics["per_category"][c]["accuracy"] or 0) for c in cats]
    ax.bar([f"{roman.get(c, c)}\n(n={metrics['per_category'][c]['n']})" for c in cats], accs, color="#4878a8")
    ax.axhline(100 * (metrics["accuracy"] or 0), color="k", ls="--", lw=1, label="overall")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("accuracy per category")
    ax.legend(loc="lower right")
    fig.tight_layout()
    save(fig, "per_category.png")

    fig, ax = plt.subplots(figsize=(4, 3.5))
    mat = metrics["confusion"]["matrix"]
    ax.imshow(mat, cmap="Blues")
    for r in range(3):
        for c in range(3):
            ax.text(c, r, str(mat[r][c]), ha="center", va="center")
    ticks = ["1", "2", "3"]
    ax.set_xticks(range(3), ticks)
    ax.set_yticks(range(3), ticks)
    ax.set_xlabel("predicted inference_N")
    ax.set_ylabel("gold inference_N")
    ax.set_title("chosen vs gold option")
    fig.tight_layout()
    save(fig, "confusion.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    pb = metrics["position_bias"]
    xs = range(3)
    ax.bar([x - 0.2 for x in xs], [pb["predicted"][lab] for lab in LABELS], width=0.4, label="predicted")
    ax.bar([x + 0.2 for x in xs], [pb["gold"][lab] for lab in LABELS], width=0.4, label="gold")
    ax.set_xticks(list(xs), list(LABELS))
    ax.set_ylabel("items")
    ax.set_title("position bias")
    ax.legend()
    fig.tight_layout()
    save(fig, "position_bias.png")

    if "margin" in metrics and metrics["margin"]["n"]:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist(metrics["margin"]["margins"], bins=20, range=(0, 1), color="#6a9f58")
        ax.axvline(metrics["margin"]["mean_margin"], color="k", ls="--", lw=1, label="mean")
        ax.set_xlabel("top probability - second")
        ax.set_ylabel("items")
        ax.set_title("probability margin")
        ax.legend()
        fig.tight_layout()
        save(fig, "margin.png")
    return written


def render_report(metrics: dict[str, Any], pred_path: str, gold_path: str, plots: Sequence[str],
                  agree: dict[str, Any] | None = None, pred2_path: str | None = None,
                  curves: Sequence[str] = (), curve_notes: Sequence[str] = ()) -> str:
    scored = metrics.get("scoring")
    how = ["- scored: " + ", ".join(f"{k} {v}" for k, v in scored.items())] if scored else []
    warnings = (metrics.get("degenerate") or {}).get("warnings", [])
    lines = ["# Evaluation report", "", f"- predictions: `{pred_path}`", f"- gold: `{gold_path}`", *how, "",
             *(f"**{w}**" for w in warnings), *([""] if warnings else []),
             f"**Accuracy: {_fmt(metrics['accuracy'])}** ({metrics['correct']}/{metrics['n']})", "",
             "| category | n | correct | accuracy |", "|---|---:|---:|---:|"]
    for c, v in metrics["per_category"].items():
        lines.append(f"| {c} | {v['n']} | {v['correct']} | {_fmt(v['accuracy'])} |")
    lines += ["", "## Chosen vs gold option", "", "| gold \\ predicted | inference_1 | inference_2 | inference_3 |",
              "|---|---:|---:|---:|"]
    for lab, row in zip(LABELS, metrics["confusion"]["matrix"]):
        lines.append(f"| {lab} | {row[0]} | {row[1]} | {row[2]} |")
    pb = metrics["position_bias"]
    lines += ["", "## Position bias", "", "| option | predicted | gold |", "|---|---:|---:|"]
    lines += [f"| {lab} | {pb['predicted'][lab]} | {pb['gold'][lab]} |" for lab in LABELS]
    deg = metrics.get("degenerate") or {}
    if "top_answer" in deg:
        lines += ["", "## Degenerate predictions (inference/degenerate.py)", "",
                  f"- most frequent answer: {deg['top_answer']}, {deg['top_share']:.0%} of items "
                  f"(gold: {'n/a' if deg['gold_share'] is None else format(deg['gold_share'], '.0%')}); "
                  f"one answer everywhere: {'YES' if deg['one_answer'] else 'no'}"]
        if "input_spread" in deg:
            lines.append(f"- mean distance of the probability vectors to their mean: {deg['input_spread']:.4f}; "
                         f"independent of the input: {'YES' if deg['input_independent'] else 'no'}")
    if "margin" in metrics:
        m = metrics["margin"]
        lines += ["", "## Probability margin (top - second)", "",
                  f"- items with probabilities: {m['n']}",
                  f"- mean margin: {m['mean_margin'] if m['mean_margin'] is None else round(m['mean_margin'], 4)}",
                  f"- mean margin, correct: {m['mean_margin_correct'] if m['mean_margin_correct'] is None else round(m['mean_margin_correct'], 4)}",
                  f"- mean margin, wrong: {m['mean_margin_wrong'] if m['mean_margin_wrong'] is None else round(m['mean_margin_wrong'], 4)}",
                  f"- mean probability of the gold option: {m['mean_gold_probability'] if m['mean_gold_probability'] is None else round(m['mean_gold_probability'], 4)}"]
    if agree is not None:
        lines += ["", f"## Agreement with `{pred2_path}`", "",
                  f"agree on {agree['agree']}/{agree['n']} ({_fmt(agree['agreement'])})", "",
                  "| | count |", "|---|---:|"]
        for k in ("both_correct", "only_a_correct", "only_b_correct", "both_wrong_same", "both_wrong_different"):
            lines.append(f"| {k.replace('_', ' ').replace(' a ', ' A ').replace(' b ', ' B ')} | {agree[k]} |")
        lines += ["", "A = predictions, B = pred2. Rows: A's choice, columns: B's choice.", "",
                  "| A \\ B | inference_1 | inference_2 | inference_3 |", "|---|---:|---:|---:|"]
        for lab, row in zip(LABELS, agree["choices"]["matrix"]):
            lines.append(f"| {lab} | {row[0]} | {row[1]} | {row[2]} |")
    lines += ["", f"## Wrong items ({len(metrics['wrong_ids'])})", ""]
    lines += [f"- {i}{' (no valid prediction)' if i in metrics['missing_predictions'] else ''}" for i in metrics["wrong_ids"]]
    if metrics["extra_predictions"]:
        lines += ["", f"Predictions for ids not in gold (ignored): {len(metrics['extra_predictions'])}"]
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    if curves or curve_notes:
        # inference/curves.py: each stage's trainer_state.json log_history, so a reader sees whether it learned.
        lines += ["", "## Training curves", ""] + [f"![{c}]({c})" for c in curves]
        lines += [f"- {n}" for n in curve_notes]
    return "".join(one_line(line) + "\n" for line in lines)  # an id with a newline cannot add a line


def write_report(metrics: dict[str, Any], out: Path, pred_path: str, gold_path: str,
                 agree: dict[str, Any] | None = None, pred2_path: str | None = None,
                 stages: Mapping[str, Path] | None = None) -> list[str]:
    """report.md, metrics.json, wrong_ids.txt, the plots and the training curves, landing together
    (files.write_together). `stages`: stage name -> its output dir, whose trainer_state.json is drawn."""
    plots = render_plots(metrics)
    curves, notes = render_curves(stages) if stages else ({}, [])
    saved = {**metrics, "predictions": pred_path, "gold": gold_path}
    if agree is not None:
        saved["agreement"] = {**agree, "pred2": pred2_path}
    # one id per line; an id with a newline or another control character as a JSON string
    wrong = "".join((i if i.isprintable() else json.dumps(i, ensure_ascii=False)) + "\n" for i in metrics["wrong_ids"])
    report = render_report(metrics, pred_path, gold_path, list(plots), agree, pred2_path, list(curves), notes)
    files = {"report.md": report.encode("utf-8"), "metrics.json": dumps_json(saved).encode("utf-8"),
             "wrong_ids.txt": wrong.encode("utf-8"), **plots, **curves}
    write_together({out / name: data for name, data in files.items()}, out)
    return list(files)


def summary(metrics: dict[str, Any]) -> str:
    lines = [f"accuracy {_fmt(metrics['accuracy'])} ({metrics['correct']}/{metrics['n']})"]
    for c, v in metrics["per_category"].items():
        lines.append(f"  {c}: {_fmt(v['accuracy'])} ({v['correct']}/{v['n']})")
    if metrics["missing_predictions"]:
        lines.append(f"  {len(metrics['missing_predictions'])} gold item(s) without a valid prediction (counted wrong)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="./run.sh evaluate", description=__doc__.splitlines()[0])
    p.add_argument("--profile", default=None)
    p.add_argument("--pred", type=Path, default=None, help="predictions (default: outputs/<profile>/dev_predictions.json)")
    p.add_argument("--gold", type=Path, default=None, help="labeled items (default: the profile's dev file)")
    p.add_argument("--pred2", type=Path, default=None, help="a second prediction file to compare with")
    p.add_argument("--out", type=Path, default=None, help="report directory (default: outputs/<profile>/eval)")
    args = p.parse_args(argv)
    profile = resolve_profile(args.profile)[0]
    pred_path = args.pred or profile.dev_predictions
    gold_path = args.gold or profile.split_file("dev")
    out = args.out or profile.eval_dir
    if out.exists() and not out.is_dir():
        print(f"error: {out}: is a file; --out takes a directory", file=sys.stderr)
        return 1
    try:
        gold, _ = load_items(gold_path, require_labels=True)
        pred = read_predictions(pred_path)
        pred2 = read_predictions(args.pred2) if args.pred2 else None
        probs = read_probs(pred_path)
    except DataError as exc:
        print(exc, file=sys.stderr)
        return 1
    metrics = compute_metrics(pred, gold, probs)
    if (scored := read_scoring(pred_path)) is not None:
        metrics["scoring"] = scored
    agree = agreement(pred, pred2, gold) if pred2 is not None else None
    stages = {f"stage{n}": profile.stage_paths(n).output_dir for n in profile.training_stages}
    try:
        write_report(metrics, out, str(pred_path), str(gold_path), agree, str(args.pred2) if args.pred2 else None,
                     stages)
    except DataError as exc:
        print(exc, file=sys.stderr)
        return 1
    print(summary(metrics))
    for line in metrics["degenerate"]["warnings"]:
        print(line, file=sys.stderr)
    if agree is not None:
        print(f"agreement with {args.pred2}: {_fmt(agree['agreement'])} ({agree['agree']}/{agree['n']})")
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
