"""`./run.sh prepare [--profile P]`: sources -> clean -> dedup -> contamination check ->
alpaca rows (+ option-order augmentation, + distilled rationales) -> stage1.jsonl,
stage2.jsonl and report.json/report.md under outputs/<profile>/prepared/.

Sources, roles and switches: preprocessing/sources.yml (profiles.yml `sources:`).
Every input item is accounted for in the report. A bad file stops the run with
`FILE: ROW/ID: FIELD: problem` and exit 1, before anything is written.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from maerak.files import atomic_write_jsonl, sha256_file
from maerak.profiles import Profile, resolve_profile
from maerak.prompt import alpaca_row
from maerak.schema import DataError, load_items
from preprocessing import augment, clean, dedup
from preprocessing.report import Report, Step
from preprocessing.sources import Loaded, Record, load_source, resolve_paths

TASK_KINDS = ("official", "items")
DEFAULT_CONFIG = "preprocessing/sources.yml"


# --- configuration ----------------------------------------------------------------------------

def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(profile: Profile, path: str | Path | None = None) -> dict:
    path = Path(path or profile.settings.get("sources", DEFAULT_CONFIG))
    path = path if path.is_absolute() else profile.root / path
    if not path.is_file():
        raise SystemExit(f"{path}: -: file: no such sources config (see preprocessing/README.md)")
    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    cfg = deep_merge(cfg, (cfg.get("profiles") or {}).get(profile.name, {}))
    cfg["_path"] = str(path)
    return cfg


def placeholders(profile: Profile) -> dict[str, str]:
    return {"data_dir": str(profile.settings["data_dir"]), "out": str(profile.out), "base_model": profile.base_model}


def resolve(profile: Profile, value: str) -> Path:
    p = Path(str(value).format(**placeholders(profile)))
    return p if p.is_absolute() else profile.root / p


def rel(profile: Profile, path: Path) -> str:
    try:
        return str(Path(path).relative_to(profile.root))
    except ValueError:
        return str(path)


# --- pipeline ---------------------------------------------------------------------------------

def _progress(iterable, desc: str, total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, total=total, unit="item", disable=not enabled or total < 2000)


def run(profile: Profile, cfg: dict, teacher=None, distill_on: bool | None = None, magpie_on: bool | None = None,
        progress: bool = True) -> Report:
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    report = Report(profile.name)
    extra: dict[str, Any] = {}

    # 0. Magpie generation (a stage-1 source read below)
    mcfg = cfg.get("magpie_generate", {})
    if mcfg.get("enabled") if magpie_on is None else magpie_on:
        from preprocessing import magpie

        extra["magpie_generate"] = magpie.run(resolve(profile, mcfg["model"]), profile.out / "magpie" / "generated.jsonl", mcfg, progress)
        timings["magpie_generate"] = round(time.perf_counter() - t0, 2)

    # 1. load every source first: a bad file stops the run before anything is written
    t = time.perf_counter()
    loaded: list[Loaded] = [load_source(spec, profile.root, placeholders(profile), cfg) for spec in cfg["sources"]]
    eval_items = []
    eval_notes = []
    for path in resolve_paths(list(cfg.get("eval_files", [])), profile.root, placeholders(profile)):
        items, _ = load_items(path)
        eval_items += [(f"{path.stem}:{it.id}", it) for it in items]
        eval_notes.append(f"{rel(profile, path)}: {len(items)} items")
    timings["load"] = round(time.perf_counter() - t, 2)

    records: dict[str, list[Record]] = {}
    for src in loaded:
        report.add_source(src.name, src.kind, src.stages, [{"path": rel(profile, f), "sha256": sha256_file(f)} for f in src.files])
        step = report.add_step(src.name, Step("load", src.raw_count, len(src.records), notes=list(src.notes)))
        for rid, reason in src.dropped:
            step.drop(rid, reason)
        records[src.name] = src.records

    # 2. clean (task conversations only; correction/Magpie text is the content and stays)
    t = time.perf_counter()
    rules = clean.load_rules(resolve(profile, cfg.get("cleaning", "preprocessing/cleaning.yml")))
    for src in loaded:
        step = report.add_step(src.name, Step("clean", len(records[src.name])))
        kept = []
        if src.kind in TASK_KINDS:
            for rec in _progress(records[src.name], f"clean {src.name}", len(records[src.name]), progress):
                res = clean.clean_item(rec.item, rules)
                step.notes += [f"{rec.id}: {n}" for n in res.notes]
                if res.item is None:
                    step.drop(rec.id, res.reason)
                else:
                    kept.append(Record(rec.source, rec.id, item=res.item))
        else:
            kept = list(records[src.name])
        step.n_out = len(kept)
        records[src.name] = kept
    timings["clean"] = round(time.perf_counter() - t, 2)

    # 3. near-duplicate removal: task examples among themselves, generic rows among themselves,
    #    in source order (official first), so the earlier copy is the one kept
    t = time.perf_counter()
    dcfg = cfg.get("dedup", {})
    k = int(dcfg.get("max_distance", 5))
    for group in (TASK_KINDS, None):
        members = [s for s in loaded if (s.kind in TASK_KINDS) == (group is not None)]
        pool = [(s.name, r) for s in members for r in records[s.name]]
        drops: dict[int, str] = {}
        if dcfg.get("enabled", True) and pool:
            parts = [dedup.item_parts(r.item) if r.item is not None else dedup.row_parts(r.row) for _, r in pool]
            fps = dedup.part_fingerprints(parts)
            bar = _progress(range(len(pool)), "dedup", len(pool), progress)
            for m in dedup.near_duplicates(fps, k, bar):
                src, other = pool[m.other]
                drops[m.index] = f"near-duplicate of {src}:{other.id} (simhash distance {m.distances[0]}/{m.distances[1]} bits, conversation/rest)"
        for s in members:
            step = report.add_step(s.name, Step("dedup", len(records[s.name])))
            if not dcfg.get("enabled", True):
                step.notes.append("dedup disabled in sources.yml")
        kept_by: dict[str, list[Record]] = {s.name: [] for s in members}
        for i, (name, rec) in enumerate(pool):
            if i in drops:
                _step(report, name, "dedup").drop(rec.id, drops[i])
            else:
                kept_by[name].append(rec)
        for s in members:
            records[s.name] = kept_by[s.name]
            _step(report, s.name, "dedup").n_out = len(kept_by[s.name])
    timings["dedup"] = round(time.perf_counter() - t, 2)

    # 4. contamination: task examples vs dev/test (cleaned the same way, for comparison only)
    t = time.perf_counter()
    cont = {"eval_files": eval_notes, "near_duplicates": [], "shared_conversations": []}
    eval_clean = [(eid, clean.clean_item(it, rules).item or it) for eid, it in eval_items]
    eval_fps = dedup.part_fingerprints([dedup.item_parts(it) for _, it in eval_clean])
    eval_convs: dict[str, list[str]] = {}
    for eid, it in eval_clean:
        eval_convs.setdefault(it.conversation_key, []).append(eid)
    for s in loaded:
        if s.kind not in TASK_KINDS:
            continue
        spec = next(x for x in cfg["sources"] if x["name"] == s.name)
        drop = spec.get("on_contamination", "keep") == "drop"
        recs = records[s.name]
        step = report.add_step(s.name, Step("contamination", len(recs)))
        hits: dict[int, list] = {}
        if recs and len(eval_fps):
            train_fps = dedup.part_fingerprints([dedup.item_parts(r.item) for r in recs])
            for m in dedup.cross_matches(train_fps, eval_fps, k):
                hits.setdefault(m.index, []).append(m)
        kept = []
        for i, rec in enumerate(recs):
            for m in hits.get(i, []):
                cont["near_duplicates"].append({"kind": "near-duplicate example", "train": f"{s.name}:{rec.id}",
                                                "eval": eval_clean[m.other][0], "distances": list(m.distances),
                                                "action": "train item dropped" if drop else "kept (reported)"})
            for eid in eval_convs.get(rec.item.conversation_key, []):
                cont["shared_conversations"].append({"kind": "same conversation", "train": f"{s.name}:{rec.id}",
                                                     "eval": eid, "action": "kept (reported)"})
            if i in hits and drop:
                step.drop(rec.id, f"near-duplicate of eval item {eval_clean[hits[i][0].other][0]}")
            else:
                kept.append(rec)
                if i in hits:
                    step.notes.append(f"{rec.id}: near-duplicate of eval item {eval_clean[hits[i][0].other][0]} (kept: on_contamination keep)")
        step.n_out = len(kept)
        records[s.name] = kept
    timings["contamination"] = round(time.perf_counter() - t, 2)

    # 5. distillation (rationales for the task items that reach a distill stage)
    dist_cfg = cfg.get("distill", {})
    rationales: dict[str, str] = {}
    distill_enabled = dist_cfg.get("enabled") if distill_on is None else distill_on
    if distill_enabled:
        from preprocessing import distill

        t = time.perf_counter()
        stages = set(int(x) for x in dist_cfg.get("stages", [2]))
        targets = [r.item for s in loaded if s.kind in TASK_KINDS and stages & set(s.stages) for r in records[s.name]]
        targets = list({it.id: it for it in targets}.values())
        if teacher is None:
            teacher = distill.load_teacher(resolve(profile, dist_cfg["teacher"]), int(dist_cfg.get("max_new_tokens", 64)))
        rationales, stats = distill.distill(targets, teacher, profile.out / "cache" / "distill.jsonl",
                                            int(dist_cfg.get("batch_size", 4)), int(dist_cfg.get("max_chars", 300)), progress)
        stats["teacher"] = teacher.name
        stats["empty_rationales"] = [iid for iid, r in rationales.items() if not r]
        extra["distill"] = stats
        timings["distill"] = round(time.perf_counter() - t, 2)

    # 6. alpaca rows per stage
    acfg = cfg.get("augment", {})
    stage_rows: dict[int, list[dict]] = {1: [], 2: []}
    by_source: dict[int, dict[str, int]] = {1: {}, 2: {}}
    for s in loaded:
        recs = records[s.name]
        step = report.add_step(s.name, Step("format", len(recs), len(recs)))
        for stage in s.stages:
            if s.kind in TASK_KINDS:
                rows = augment.task_rows([r.item for r in recs], acfg.get(f"stage{stage}_orders", "identity"))
                if distill_enabled and stage in set(int(x) for x in dist_cfg.get("stages", [2])):
                    orders = augment.orders_named(dist_cfg.get("orders", "identity"))
                    rows += [alpaca_row(r.item, o, rationale=rationales[r.item.id]) for r in recs
                             for o in orders if rationales.get(r.item.id)]
            else:
                rows = [dict(r.row) for r in recs]
            stage_rows[stage] += rows
            by_source[stage][s.name] = len(rows)
            step.notes.append(f"stage {stage}: {len(rows)} rows")

    for stage in (1, 2):
        if not stage_rows[stage]:
            raise DataError([])  # replaced below with a readable message
    files = {1: profile.prepared / "stage1.jsonl", 2: profile.prepared / "stage2.jsonl"}
    extra["stages"] = {f"stage{n}": {"rows": len(stage_rows[n]), "by_source": by_source[n], "file": rel(profile, files[n])} for n in (1, 2)}
    extra["contamination"] = cont
    extra["config"] = {"path": rel(profile, Path(cfg["_path"])), "sha256": hashlib.sha256(
        json.dumps({k: v for k, v in cfg.items() if k != "_path"}, sort_keys=True, ensure_ascii=False).encode()).hexdigest()}
    problems = report.check()
    if problems:
        raise RuntimeError("prepare report does not add up:\n" + "\n".join(problems))

    # 7. write (each file atomically; the report last)
    for n in (1, 2):
        atomic_write_jsonl(files[n], stage_rows[n])
        extra["stages"][f"stage{n}"]["sha256"] = sha256_file(files[n])
    timings["total"] = round(time.perf_counter() - t0, 2)
    extra["timings_s"] = timings
    report.extra = extra
    report.write(profile.prepared)
    return report


def _step(report: Report, source: str, name: str) -> Step:
    return next(st for st in reversed(report.sources[source]["steps"]) if st.step == name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run.sh prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="sample or competition (default: auto)")
    parser.add_argument("--config", help="sources file (default: the profile's `sources`)")
    parser.add_argument("--distill", dest="distill", action="store_true", default=None, help="run distillation (overrides sources.yml)")
    parser.add_argument("--no-distill", dest="distill", action="store_false")
    parser.add_argument("--magpie", dest="magpie", action="store_true", default=None, help="generate Magpie pairs first")
    parser.add_argument("--no-magpie", dest="magpie", action="store_false")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    profile = resolve_profile(args.profile)[0]
    profile.apply_env()
    cfg = load_config(profile, args.config)
    try:
        report = run(profile, cfg, distill_on=args.distill, magpie_on=args.magpie, progress=not args.quiet)
    except DataError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        if not exc.problems:
            print("prepare: a stage has no rows (no task data?)", file=sys.stderr)
        print("prepare: stopped; nothing written", file=sys.stderr)
        return 1
    except FileNotFoundError as exc:
        print(f"prepare: {exc}; nothing written", file=sys.stderr)
        return 1
    d = report.as_dict()
    for name, info in d["stages"].items():
        print(f"{name}: {info['rows']} rows -> {info['file']}  ({', '.join(f'{k} {v}' for k, v in info['by_source'].items())})")
    dropped = sum(st["dropped_count"] for s in d["sources"].values() for st in s["steps"])
    cont = d["contamination"]
    print(f"dropped {dropped} item(s); contamination: {len(cont['near_duplicates'])} near-duplicate(s), "
          f"{len(cont['shared_conversations'])} shared conversation(s) with dev/test")
    print(f"report: {rel(profile, profile.prepared / 'report.md')}  ({d['timings_s']['total']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
