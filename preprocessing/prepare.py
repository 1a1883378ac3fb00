"""`./run.sh prepare [--profile P]`: sources -> clean -> dedup -> contamination check ->
alpaca rows (+ option-order augmentation, + distilled rationales when a teacher is set) ->
token lengths against each stage's sequence_len (preprocessing/lengths.py) -> stage1.jsonl,
stage2.jsonl and report.json/report.md under outputs/<profile>/prepared/.

Sources, roles and switches: preprocessing/sources.yml (profiles.yml `sources:`), read and
checked by preprocessing/config.py. The stage files go where the stage YAMLs read them
(datasets[0].path). Every input item is accounted for in the report. A bad file stops
the run with `FILE: ROW/ID: FIELD: problem` and exit 1, before anything is written.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from maerak import clean
from maerak.errors import EmptyStage, MaerakError
from maerak.files import jsonl_bytes, output_problem, rel_path, write_together
from maerak.fingerprint import file_sha256
from maerak.lock import LOCK_NAME, output_lock
from maerak.modes import Mode, mode_named
from maerak.profiles import Profile, is_local_model, resolve_profile
from maerak.progress import bar as progress_bar
from maerak.schema import DataError, Item, Problem, load_items
from preprocessing import augment, dedup, distill, lengths, magpie
from preprocessing.augment import TaggedRow
from preprocessing.config import TASK_KINDS, SourcesConfig, config_problem, load_config, placeholders, resolve
from preprocessing.report import Report, Step
from preprocessing.sources import Loaded, Record, load_source, missing_required, resolve_paths

Records = dict[str, list[Record]]  # source name -> its records still in, in source order
EvalItems = list[tuple[str, Item]]  # ("<file stem>:<id>", item) for every dev/test item


def rel(profile: Profile, path: Path) -> str:
    return rel_path(path, profile.root)


# --- what a run will do (said in its first lines and in the report) -----------------------------

def distill_plan(profile: Profile, cfg: SourcesConfig, distill_on: bool | None,
                 teacher: distill.Teacher | None = None) -> tuple[bool, Path | None, str]:
    """(distill?, teacher directory to load, the line that says so). A teacher is a model the
    user brings: with none set, prepare goes on without rationale rows."""
    dcfg = cfg.distill
    if not (dcfg.enabled if distill_on is None else distill_on):
        return False, None, "distillation: off (" + ("--no-distill" if distill_on is False else "distill.enabled is false") + ")"
    if teacher is not None:
        return True, None, f"distillation: on, teacher {teacher.name}"
    where = rel(profile, cfg.path)
    if not dcfg.teacher:
        if distill_on:
            raise config_problem(cfg, "distill.teacher", "--distill needs a teacher: set distill.teacher to a local model directory")
        return False, None, (f"distillation: OFF: no teacher (distill.teacher is not set in {where}; a teacher is a local "
                             "model you bring): no rationale rows")
    path = resolve(profile, dcfg.teacher)
    if not path.exists():
        raise config_problem(cfg, "distill.teacher", f"{path}: no such model directory (put your teacher model there, "
                             "or unset distill.teacher to prepare without rationale rows)")
    return True, path, f"distillation: on, teacher {rel(profile, path)}"


def lengths_plan(profile: Profile, cfg: SourcesConfig) -> tuple[Callable[[dict], int] | None, dict, str]:
    """(row length counter or None, token-length info for the report, the line that says so)."""
    lcfg = cfg.lengths  # its values were checked when the file was read (preprocessing/config.py)
    ref = lengths.tokenizer_ref(profile, lcfg.tokenizer)
    online = not profile.config.offline and not is_local_model(ref, profile.root)  # a folder is on no hub
    tokenizer, why = lengths.load_tokenizer(ref, download=online)
    if tokenizer is None:
        where = rel(profile, cfg.path)
        line = (f"token lengths: NOT CHECKED: no tokenizer {ref} in local files or the Hugging Face cache"
                f"{', nor fetched from the hub' if online else ''} ({why}); "
                f"Axolotl will drop rows over sequence_len with only an INFO log line. Put the tokenizer there "
                f"(for a hub id: `hf download {ref} --include 'tokenizer*'`) or set lengths.tokenizer in {where}")
        if lcfg.on_missing_tokenizer == "stop":
            raise config_problem(cfg, "lengths.tokenizer", line.split(": ", 1)[1] + " (lengths.on_missing_tokenizer: stop)")
        return None, {"checked": False, "tokenizer": ref, "reason": why}, line
    if not profile.has_stage_configs:
        raise config_problem(cfg, "axolotl_configs", f"profile {profile.name!r} names no axolotl_configs: no sequence_len to check rows against")
    limits = lengths.stage_limits(profile, profile.training_stages)
    for info in limits.values():
        info["config"] = rel(profile, Path(info["config"]))
    said = ", ".join(f"stage {n} sequence_len {v['sequence_len']} ({v['config']})" for n, v in limits.items())
    rows, pairs = lengths.row_counter(tokenizer), (lengths.pair_counter(tokenizer) if profile.config.preference else None)
    count = (lambda row: pairs(row) if "prompt" in row else rows(row)) if pairs else rows  # stage 3's pairs have a prompt
    return (count, {"checked": True, "tokenizer": rel(profile, Path(ref)),
                                           "stages": {f"stage{n}": v for n, v in limits.items()}},
            f"token lengths: Axolotl's alpaca count with the tokenizer of {rel(profile, Path(ref))}; {said}")


# --- pipeline ---------------------------------------------------------------------------------

def _progress(iterable, desc: str, total: int, enabled: bool):
    return progress_bar(iterable, desc=desc, total=total, unit="item", enabled=enabled and total >= 2000)


@contextmanager
def _timed(timings: dict[str, float], key: str) -> Iterator[None]:
    t = time.perf_counter()
    yield
    timings[key] = round(time.perf_counter() - t, 2)


def run(profile: Profile, cfg: SourcesConfig, teacher: distill.Teacher | None = None, distill_on: bool | None = None,
        magpie_on: bool | None = None, progress: bool = True, say: Callable[[str], None] = print) -> Report:
    """Every step, in order; raises DataError (a bad file, an over-long row) or EmptyStage
    before anything is written."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    report = Report(profile.name)
    extra: dict[str, Any] = {}  # the report's sections, in the order report.json lists them

    missing = missing_required(cfg, profile.root, placeholders(profile))
    if missing:
        raise DataError(missing)
    # first: what this run will not do, and why (also at the top of the report)
    distill_enabled, teacher_path, distill_line = distill_plan(profile, cfg, distill_on, teacher)
    count, token_info, lengths_line = lengths_plan(profile, cfg)
    extra["notices"] = [distill_line, lengths_line]
    for line in extra["notices"]:
        say(f"prepare: {line}")

    # 0. Magpie generation (a stage-1 source read below)
    mcfg = cfg.magpie_generate
    if mcfg.enabled if magpie_on is None else magpie_on:
        extra["magpie_generate"] = magpie.run(resolve(profile, mcfg.model), profile.out / "magpie" / "generated.jsonl", mcfg, progress)
        timings["magpie_generate"] = round(time.perf_counter() - t0, 2)  # since the start, as before

    with _timed(timings, "load"):
        loaded, records = load(profile, cfg, report)
        eval_items, eval_notes = load_eval(profile, cfg)
    with _timed(timings, "clean"):
        rules = clean.load_rules()  # the one rules file the scorer applies too
        records = clean_records(loaded, records, report, rules, progress)
    with _timed(timings, "dedup"):
        records = dedup_records(loaded, records, report, cfg, progress)
    with _timed(timings, "contamination"):
        records, contamination = check_contamination(loaded, records, report, cfg, eval_items, eval_notes, rules)

    rationales: dict[str, str] = {}
    extra["distill"] = {"status": "off", "why": distill_line}
    if distill_enabled:
        with _timed(timings, "distill"):
            rationales, extra["distill"] = distill_rationales(profile, cfg, loaded, records, teacher, teacher_path, progress)

    mode = mode_named(profile.scoring_mode)  # the rows' mode, recorded with the stage-2 checkpoint after training
    extra["mode"] = mode.name
    stage_rows = format_rows(profile, cfg, loaded, records, report, rationales, distill_enabled, mode)
    with _timed(timings, "token_lengths"):
        extra["token_lengths"] = check_lengths(profile, cfg, report, loaded, records, stage_rows, count, token_info, progress)

    write(profile, cfg, report, loaded, stage_rows, extra, contamination, timings, t0)
    return report


def load(profile: Profile, cfg: SourcesConfig, report: Report) -> tuple[list[Loaded], Records]:
    """1. Every source, read and checked in full: a bad file stops the run before anything is written."""
    loaded = [load_source(spec, profile.root, placeholders(profile), cfg) for spec in cfg.sources]
    records: Records = {}
    for src in loaded:
        report.add_source(src.name, src.kind, src.stages, [{"path": rel(profile, f), "sha256": file_sha256(f)} for f in src.files])
        step = report.add_step(src.name, Step("load", src.raw_count, len(src.records), notes=list(src.notes)))
        for rid, reason in src.dropped:
            step.drop(rid, reason)
        records[src.name] = src.records
    return loaded, records


def load_eval(profile: Profile, cfg: SourcesConfig) -> tuple[EvalItems, list[str]]:
    """The dev/test items the contamination step compares against, and a line per file for the report."""
    eval_items: EvalItems = []
    eval_notes: list[str] = []
    for path in resolve_paths(list(cfg.eval_files), profile.root, placeholders(profile)):
        items, _ = load_items(path)
        eval_items += [(f"{path.stem}:{it.id}", it) for it in items]
        eval_notes.append(f"{rel(profile, path)}: {len(items)} items")
    return eval_items, eval_notes


def clean_records(loaded: list[Loaded], records: Records, report: Report, rules: clean.Rules, progress: bool) -> Records:
    """2. Clean task conversations only; correction/Magpie text is the content and stays."""
    out: Records = {}
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
        out[src.name] = kept
    return out


def dedup_records(loaded: list[Loaded], records: Records, report: Report, cfg: SourcesConfig, progress: bool) -> Records:
    """3. Near-duplicate removal: task examples among themselves, generic rows among themselves,
    in source order (official first), so the earlier copy is the one kept."""
    dcfg = cfg.dedup
    k = dcfg.max_distance
    out: Records = dict(records)
    for group in (TASK_KINDS, None):
        members = [s for s in loaded if (s.kind in TASK_KINDS) == (group is not None)]
        pool = [(s.name, r) for s in members for r in records[s.name]]
        drops: dict[int, str] = {}
        if dcfg.enabled and pool:
            parts = [dedup.item_parts(r.item) if r.item is not None else dedup.row_parts(r.row) for _, r in pool]
            fps = dedup.part_fingerprints(parts)
            bar = _progress(range(len(pool)), "dedup", len(pool), progress)
            for m in dedup.near_duplicates(fps, k, bar):
                src, other = pool[m.other]
                drops[m.index] = f"near-duplicate of {src}:{other.id} (simhash distance {m.distances[0]}/{m.distances[1]} bits, conversation/rest)"
        steps: dict[str, Step] = {}
        for s in members:
            steps[s.name] = report.add_step(s.name, Step("dedup", len(records[s.name])))
            if not dcfg.enabled:
                steps[s.name].notes.append("dedup disabled in sources.yml")
        kept_by: Records = {s.name: [] for s in members}
        for i, (name, rec) in enumerate(pool):
            if i in drops:
                steps[name].drop(rec.id, drops[i])
            else:
                kept_by[name].append(rec)
        for s in members:
            out[s.name] = kept_by[s.name]
            steps[s.name].n_out = len(kept_by[s.name])
    return out


def check_contamination(loaded: list[Loaded], records: Records, report: Report, cfg: SourcesConfig,
                        eval_items: EvalItems, eval_notes: list[str], rules: clean.Rules) -> tuple[Records, dict]:
    """4. Task examples vs dev/test (cleaned the same way, for comparison only): every near-duplicate
    and shared conversation is reported; a source with `on_contamination: drop` loses its copies."""
    k = cfg.dedup.max_distance
    cont: dict[str, Any] = {"eval_files": eval_notes, "near_duplicates": [], "shared_conversations": []}
    eval_clean = list(zip([eid for eid, _ in eval_items], clean.model_view([it for _, it in eval_items], rules)))
    eval_fps = dedup.part_fingerprints([dedup.item_parts(it) for _, it in eval_clean])
    eval_convs: dict[str, list[str]] = {}
    for eid, it in eval_clean:
        eval_convs.setdefault(it.conversation_key, []).append(eid)
    out: Records = dict(records)
    for s in loaded:
        if s.kind not in TASK_KINDS:
            continue
        drop = cfg.source(s.name).on_contamination == "drop"
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
        out[s.name] = kept
    return out, cont


def distill_rationales(profile: Profile, cfg: SourcesConfig, loaded: list[Loaded], records: Records,
                       teacher: distill.Teacher | None, teacher_path: Path | None, progress: bool) -> tuple[dict[str, str], dict]:
    """5. A rationale per task item that reaches a distill stage (item id -> text), and the
    report's `distill` section. Records are not changed."""
    dist_cfg = cfg.distill
    stages = set(dist_cfg.stages)
    targets = [r.item for s in loaded if s.kind in TASK_KINDS and stages & set(s.stages) for r in records[s.name]]
    targets = list({it.id: it for it in targets}.values())
    if teacher is None:
        teacher = distill.load_teacher(teacher_path, dist_cfg.max_new_tokens, dist_cfg.backend, **profile.vllm)
    rationales, stats = distill.distill(targets, teacher, profile.out / "cache" / "distill.jsonl", dist_cfg.batch_size,
                                        dist_cfg.max_chars, progress)
    stats["teacher"] = teacher.name
    stats["empty_rationales"] = [iid for iid, r in rationales.items() if not r]
    return rationales, {"status": "on", **stats}


def format_rows(profile: Profile, cfg: SourcesConfig, loaded: list[Loaded], records: Records, report: Report,
                rationales: dict[str, str], distill_enabled: bool, mode: Mode) -> dict[int, list[TaggedRow]]:
    """6. Training rows per stage, each with its source, id and tag (for the length check): task
    items through the scoring mode's `training_rows`, a note where the mode gives orders less meaning."""
    dist_stages = set(cfg.distill.stages) if distill_enabled else set()
    stage_rows: dict[int, list[TaggedRow]] = {1: [], 2: []}
    for s in loaded:
        recs = records[s.name]
        step = report.add_step(s.name, Step("format", len(recs), len(recs)))
        for stage in s.stages:
            if s.kind in TASK_KINDS:
                items = [r.item for r in recs]
                orders = {f"augment.stage{stage}_orders": cfg.augment.orders(stage)}
                rows = augment.tagged_task_rows(s.name, items, mode, orders[f"augment.stage{stage}_orders"])
                if stage in dist_stages:
                    orders["distill.orders"] = cfg.distill.orders
                    rows += augment.tagged_task_rows(s.name, items, mode, orders["distill.orders"], rationales)
                step.notes += [f"stage {stage}: {key} {note}" for key, name in orders.items()
                               if (note := mode.augmentation_note(name))]
            else:
                rows = [TaggedRow(s.name, r.id, "row", dict(r.row)) for r in recs]
            stage_rows[stage] += rows
            step.notes.append(f"stage {stage}: {len(rows)} rows")
        if profile.config.preference and s.kind in TASK_KINDS and 2 in s.stages:
            # stage 3 (ORPO): stage 2's task items as preference pairs, in stage 2's option orders
            pairs = augment.tagged_preference_rows(s.name, [r.item for r in recs], mode, cfg.augment.orders(2))
            stage_rows.setdefault(3, []).extend(pairs)
            step.notes.append(f"stage 3: {len(pairs)} preference pairs (augment.stage2_orders {cfg.augment.orders(2)})")
    return stage_rows


def output_files(profile: Profile) -> list[Path]:
    """Every file prepare writes: the stage files (where the stage YAMLs read them) and the report."""
    return [*(profile.stage_data(n) for n in profile.training_stages),
            profile.prepared / "report.json", profile.prepared / "report.md"]


def write(profile: Profile, cfg: SourcesConfig, report: Report, loaded: list[Loaded], stage_rows: dict[int, list[TaggedRow]],
          extra: dict[str, Any], contamination: dict, timings: dict[str, float], t0: float) -> None:
    """8. Check, then write each stage file atomically and the report last. Raises EmptyStage,
    or MaerakError when the report does not add up (a bug here), before writing anything."""
    stages = profile.training_stages  # 3: the ORPO pairs (preference: true)
    for stage in stages:
        if not stage_rows.get(stage):
            raise EmptyStage(stage)
    by_source = {n: {s.name: sum(r.source == s.name for r in stage_rows[n]) for s in loaded
                     if n in s.stages or (n == 3 and 2 in s.stages and s.kind in TASK_KINDS)} for n in stages}
    files = {n: profile.stage_data(n) for n in stages}  # where the stage YAMLs read them
    extra["stages"] = {f"stage{n}": {"rows": len(stage_rows[n]), "by_source": by_source[n], "file": rel(profile, files[n])} for n in stages}
    extra["contamination"] = contamination
    extra["config"] = {"path": rel(profile, cfg.path), "sha256": hashlib.sha256(
        json.dumps(cfg.digest_data(), sort_keys=True, ensure_ascii=False).encode()).hexdigest()}
    problems = report.check()
    if problems:
        raise MaerakError("prepare report does not add up:\n" + "\n".join(problems))
    out: dict[Path, bytes] = {}
    for n in stages:
        out[files[n]] = jsonl_bytes(r.row for r in stage_rows[n])
        extra["stages"][f"stage{n}"]["sha256"] = hashlib.sha256(out[files[n]]).hexdigest()
    timings["total"] = round(time.perf_counter() - t0, 2)
    extra["timings_s"] = timings
    report.extra = extra
    out.update(report.files(profile.prepared))
    write_together(out, profile.out)  # the stage files and the report land together or not at all


def check_lengths(profile: Profile, cfg: SourcesConfig, report: Report, loaded: list[Loaded], records: dict[str, list[Record]],
                  stage_rows: dict[int, list[TaggedRow]], count: Callable[[dict], int] | None, info: dict,
                  progress: bool = True) -> dict:
    """Length distribution per stage and source, and every row over the stage's sequence_len.
    Over-long rows of a source with `over_length: stop` (the default) stop the run (DataError,
    one line per row); with `drop` they leave `stage_rows` and the report says why. An item
    counts as dropped at the `length` step only when all its rows were."""
    if count is None:
        for s in loaded:
            n = len(records[s.name])
            report.add_step(s.name, Step("length", n, n, notes=["token lengths not checked: no tokenizer"]))
        return info
    policy = {spec.name: cfg.over_length(spec) for spec in cfg.sources}
    where = {s.name: rel(profile, s.files[0]) if len(s.files) == 1 else s.name for s in loaded}
    over: list[dict] = []
    for n, rows in stage_rows.items():
        limit = info["stages"][f"stage{n}"]["sequence_len"]
        counts = [count(r.row) for r in _progress(rows, f"tokenize stage {n}", len(rows), progress)]
        by_source: dict[str, list[int]] = {}
        for r, k in zip(rows, counts):
            by_source.setdefault(r.source, []).append(k)
        stage_over = [{"stage": n, "source": r.source, "id": r.id, "row": r.tag, "tokens": k, "sequence_len": limit,
                       "action": "dropped" if policy[r.source] == "drop" else "stopped"}
                      for r, k in zip(rows, counts) if k > limit]
        info["stages"][f"stage{n}"].update(by_source={k: lengths.distribution(v) for k, v in by_source.items()}, over=stage_over)
        over += stage_over
        cut = {(o["source"], o["id"], o["row"]) for o in stage_over if o["action"] == "dropped"}
        stage_rows[n] = [r for r in rows if (r.source, r.id, r.tag) not in cut]
    stops = [o for o in over if o["action"] == "stopped"]
    if stops:
        cfg_file = rel(profile, cfg.path)
        configs = {n: info["stages"][f"stage{n}"]["config"] for n in stage_rows}
        raise DataError([Problem(where[o["source"]], f"{o['source']}:{o['id']}", "tokens",
                                 f"stage {o['stage']} row ({o['row']}) is {o['tokens']} tokens, over sequence_len "
                                 f"{o['sequence_len']} ({configs[o['stage']]}): Axolotl would drop it; "
                                 f"shorten it, raise sequence_len, or set over_length: drop for source {o['source']} in {cfg_file}")
                         for o in stops])
    total = Counter((r.source, r.id) for rows in stage_rows.values() for r in rows)
    gone: dict[tuple[str, str], list[dict]] = {}
    for o in over:
        gone.setdefault((o["source"], o["id"]), []).append(o)
    for s in loaded:
        step = report.add_step(s.name, Step("length", len(records[s.name])))
        kept = []
        for rec in records[s.name]:
            rows_gone = gone.get((s.name, rec.id), [])
            why = "; ".join(f"stage {o['stage']} {o['row']}: {o['tokens']} tokens > sequence_len {o['sequence_len']}" for o in rows_gone)
            if rows_gone and not total[(s.name, rec.id)]:
                step.drop(rec.id, f"every row over sequence_len ({why})")
                continue
            if rows_gone:
                step.notes.append(f"{rec.id}: row(s) dropped, over sequence_len: {why}")
            kept.append(rec)
        step.n_out = len(kept)
        records[s.name] = kept
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run.sh prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="sample, official-cpu or competition (default: auto)")
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
        # the checks submit makes on its output (a directory, a parent that is a file, a read-only
        # or unwritable folder), on every file prepare writes, before any work
        for path in (*output_files(profile), profile.out / LOCK_NAME):
            if problem := output_problem(path):
                raise MaerakError(problem)
        with output_lock(profile.out, "prepare"):
            report = run(profile, cfg, distill_on=args.distill, magpie_on=args.magpie, progress=not args.quiet)
    except DataError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print("prepare: stopped; nothing written", file=sys.stderr)
        return 1
    except EmptyStage:
        print("prepare: a stage has no rows (no task data?)", file=sys.stderr)
        print("prepare: stopped; nothing written", file=sys.stderr)
        return 1
    except (MaerakError, FileNotFoundError) as exc:
        print(f"prepare: {exc}" + ("" if "nothing written" in str(exc) else "; nothing written"), file=sys.stderr)
        return 1
    d = report.as_dict()
    for name, info in d["stages"].items():
        print(f"{name}: {info['rows']} rows -> {info['file']}  ({', '.join(f'{k} {v}' for k, v in info['by_source'].items())})")
    dropped = sum(st["dropped_count"] for s in d["sources"].values() for st in s["steps"])
    cont = d["contamination"]
    print(f"dropped {dropped} item(s); contamination: {len(cont['near_duplicates'])} near-duplicate(s), "
          f"{len(cont['shared_conversations'])} shared conversation(s) with dev/test")
    tl = d["token_lengths"]
    if tl["checked"]:
        over = [o for st in tl["stages"].values() for o in st["over"]]
        print(f"token lengths: {len(over)} row(s) over sequence_len, dropped (reasons in the report)" if over
              else "token lengths: every row within sequence_len")
    else:
        print("token lengths: NOT CHECKED (no tokenizer; see the first lines)")
    print(f"report: {rel(profile, profile.prepared / 'report.md')}  ({d['timings_s']['total']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
