"""A CPU run's time budget: steps per training stage, scoring requests, and the minutes they take here.

The arithmetic (pure functions):
- optimizer steps of a stage as Axolotl runs it, unpacked rows (the CPU profiles don't pack):
  Axolotl's calculate_total_num_steps (axolotl/utils/trainer.py) is ceil(rows x num_epochs /
  batch_size) with batch_size = micro_batch_size x gradient_accumulation_steps (one process), and
  its trainer builder passes `max_steps = cfg.max_steps or total_num_steps` to the HF Trainer
  (axolotl/core/builders/base.py), which then runs exactly that many steps, going round the data
  again when max_steps is more than an epoch;
- rows per step: batch_size; an ORPO (`rl:`) row is a pair, two sequences (chosen and rejected)
  through the model, so it counts as two rows;
- scoring requests: dev + test items x the option orders the mode scores;
- estimate = sum over stages of steps x rows per step x seconds per row + requests x seconds per request.

The rates are measured on this CPU, never constants (`training/step_rate.py` `measure`, passed in): one training step (forward,
backward, AdamW) of the base model on one real prepared stage-2 row in the dtype `cpu_dtype`
chose for stage 2 (after one warm-up step on the same row: first-call kernel selection is not
throughput), and one inference forward of that row in the scoring dtype, the scorer's work per
item (its context once, the three short options after it). Every stage is priced at the stage-2
rate: stage 1 (LoRA) costs less per row, so its share is an upper bound. The rates are cached
under outputs/<profile>/budget/, keyed by their content: the CPU key (maerak/cpu_dtype.py
cpu_key: CPU model, flags, torch version and kernel level), the model's config.json, the row, the
dtypes, the optimizer and the answer-loss switch. A previous run on this CPU (same CPU key and
dtypes) that trained stage 2 and scored gives its own rates instead (`previous_rates`; the line
names the source). A rate that is not a finite positive number gives "no estimate", in one line.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from maerak.files import atomic_write_json

CACHE_DIR = "budget"  # under the profile's output folder


# --- the arithmetic -------------------------------------------------------------------------

def batch_size(cfg: dict[str, Any]) -> int:
    """Rows per optimizer step as Axolotl's normalize_config sets it (one process)."""
    micro = int(cfg.get("micro_batch_size") or 1)
    accum = int(cfg.get("gradient_accumulation_steps") or 1)
    return int(cfg.get("batch_size") or micro * accum)


def stage_steps(cfg: dict[str, Any], rows: int) -> int:
    """Optimizer steps the HF Trainer runs for a stage YAML `cfg` on `rows` unpacked rows."""
    if cfg.get("sample_packing"):
        raise ValueError("sample_packing: the budget counts unpacked rows only (the CPU profiles don't pack)")
    total = int(math.ceil(rows * float(cfg.get("num_epochs") or 1) / batch_size(cfg)))
    return int(cfg.get("max_steps") or total)


def sequences_per_row(cfg: dict[str, Any]) -> int:
    """Sequences one row puts through the model: two for a preference pair (`rl:`), else one."""
    return 2 if cfg.get("rl") else 1


@dataclass(frozen=True)
class StagePlan:
    stage: int
    steps: int
    rows_per_step: int     # rows (pairs for ORPO) per optimizer step
    sequences: int         # sequences through the model in the whole stage

    def text(self) -> str:
        unit = "pairs" if self.sequences > self.steps * self.rows_per_step else "rows"
        return f"stage {self.stage} {self.steps} steps × {self.rows_per_step} {unit}"


def stage_plan(stage: int, cfg: dict[str, Any], rows: int) -> StagePlan:
    steps = stage_steps(cfg, rows)
    per = batch_size(cfg)
    return StagePlan(stage, steps, per, steps * per * sequences_per_row(cfg))


@dataclass(frozen=True)
class Rates:
    train_s_per_row: float    # one training sequence: forward + backward + optimizer
    score_s_per_item: float   # one scoring request
    dtype: str                # training dtype the rate was measured in
    score_dtype: str
    source: str               # measured | cached


def usable(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@dataclass(frozen=True)
class Estimate:
    stages: tuple[StagePlan, ...]
    skipped: tuple[int, ...]  # stages the profile does not run
    requests: int
    rates: Rates | None
    seconds: float | None     # None: no estimate
    why_not: str = ""

    def line(self) -> str:
        if not self.stages:
            return f"budget: no estimate ({self.why_not})"
        parts = [s.text() for s in self.stages] + [f"stage {n} off" for n in self.skipped]
        head = f"budget: {', '.join(parts)}; scoring {self.requests} items"
        if self.seconds is None:
            return f"{head}; no estimate ({self.why_not})"
        r = self.rates
        return (f"{head}; estimated {self.seconds / 60:.0f} min on this CPU ({r.dtype}, {r.source} "
                f"{r.train_s_per_row:.2f} s/row training, {r.score_s_per_item:.2f} s/item scoring)")

    def record(self, cpu: str = "") -> dict[str, Any]:
        """For results.json: a later run compares this with the step timings (`previous_rates`)."""
        return {"cpu_key": cpu, "stages": {f"stage{s.stage}": {"steps": s.steps, "rows_per_step": s.rows_per_step,
                                                "sequences": s.sequences} for s in self.stages},
                "scoring_items": self.requests, "rates": asdict(self.rates) if self.rates else None,
                "seconds": self.seconds, "why_not": self.why_not or None, "line": self.line()}


def estimate(stages: tuple[StagePlan, ...], skipped: tuple[int, ...], requests: int, rates: Rates | None) -> Estimate:
    """The total from the plan and the rates (pure); rates that are not finite positive numbers give no estimate."""
    if rates is None:
        return Estimate(stages, skipped, requests, None, None, "no measured rates")
    if not (usable(rates.train_s_per_row) and usable(rates.score_s_per_item)):
        return Estimate(stages, skipped, requests, rates, None,
                        f"measured rates are not finite positive numbers: {rates.train_s_per_row!r} s/row, "
                        f"{rates.score_s_per_item!r} s/item")
    seconds = sum(s.sequences for s in stages) * rates.train_s_per_row + requests * rates.score_s_per_item
    return Estimate(stages, skipped, requests, rates, seconds)


# --- reading the profile ---------------------------------------------------------------------

def count_rows(path: Path) -> int:
    """Rows of a prepared JSONL file (non-empty lines)."""
    with open(path, encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def profile_plan(profile) -> tuple[tuple[StagePlan, ...], tuple[int, ...], int]:
    """(stage plans, stages off, scoring requests) of a profile whose prepare has run."""
    from maerak.modes import mode_named
    from maerak.schema import load_items

    stages = tuple(stage_plan(n, profile.stage_config(n), count_rows(profile.stage_data(n)))
                   for n in profile.training_stages)
    skipped = tuple(n for n in (1, 2, 3) if n not in profile.training_stages)
    orders = len(mode_named(profile.scoring_mode).orders(profile.config.scoring.tta))
    items = sum(len(load_items(profile.split_file(s))[0]) for s in ("dev", "test"))
    return stages, skipped, items * orders


# --- the measurement -------------------------------------------------------------------------

def rates_key(cpu: str, model_config: bytes, row: str, dtype: str, score_dtype: str, cfg: dict[str, Any]) -> str:
    """What a rate depends on: the CPU key, the model's architecture, the row, the dtypes, the optimizer."""
    answer_loss = any("answer_loss" in str(p) for p in cfg.get("plugins") or [])
    text = json.dumps([cpu, hashlib.sha256(model_config).hexdigest(), row, dtype, score_dtype,
                       str(cfg.get("optimizer") or "adamw_torch"), answer_loss, int(cfg.get("sequence_len") or 0)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def rates(profile, dtype: str, score_dtype: str, measure_fn: Callable[..., tuple[float, float]],
          log: Callable[[str], None] = print) -> Rates | None:
    """This CPU's rates for `profile` (prepare has run), read from the cache or measured and cached."""
    from maerak.cpu_dtype import cpu_key

    rows_file = profile.stage_data(2)
    with open(rows_file, encoding="utf-8") as fh:
        first = next((line for line in fh if line.strip()), None)
    if first is None:
        log(f"budget: no estimate ({rows_file} has no rows to time)")
        return None
    row = json.loads(first)
    model_dir = Path(profile.base_model)
    cfg = profile.stage_config(2)
    key = rates_key(cpu_key(), (model_dir / "config.json").read_bytes(), first, dtype, score_dtype, cfg)
    path = profile.out / CACHE_DIR / f"rates-{key}.json"
    if path.is_file():
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
            return Rates(float(saved["train_s_per_row"]), float(saved["score_s_per_item"]), dtype, score_dtype, "cached")
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: measure again
    train_s, score_s = measure_fn(model_dir, row, cfg, dtype, score_dtype)
    found = Rates(train_s, score_s, dtype, score_dtype, "measured")
    if usable(train_s) and usable(score_s):  # a bad number is never cached
        atomic_write_json(path, {**asdict(found), "cpu_key": cpu_key(), "key": key})
    return found


def previous_rates(record: dict[str, Any], cpu: str, dtype: str, score_dtype: str) -> Rates | None:
    """The rates a previous run on this CPU (same CPU key and dtypes) took, from its results.json
    record: stage 2's seconds / its sequences, and (submit + predict-dev) seconds / the items
    scored. Steps it reused (0 s) or numbers that are not finite positive give None. Its step
    seconds include loading and saving the model: for a few steps a rate from them is high."""
    try:
        est, steps = record["estimate"], record["steps"]
        if est["cpu_key"] != cpu or est["rates"]["dtype"] != dtype or est["rates"]["score_dtype"] != score_dtype:
            return None
        train = steps["train-stage2"] / est["stages"]["stage2"]["sequences"]
        score = (steps["submit"] + steps["predict-dev"]) / est["scoring_items"]
    except (KeyError, TypeError, ZeroDivisionError):
        return None
    if not (usable(train) and usable(steps["submit"]) and usable(steps["predict-dev"])):
        return None
    return Rates(train, score, dtype, score_dtype, "previous run's")


def profile_estimate(profile, dtypes: dict[str, Any], measure_fn: Callable[..., tuple[float, float]],
                     log: Callable[[str], None] = print) -> Estimate:
    """The run's estimate for a profile after prepare, its rates measured (or cached) on this CPU;
    `dtypes` are cpu_dtype.profile_choices' answers."""
    from maerak.cpu_dtype import cpu_key

    stages, skipped, requests = profile_plan(profile)
    train = dtypes["stage2"].dtype if "stage2" in dtypes else "float32"
    score = dtypes["score"].dtype if "score" in dtypes else "float32"
    found = None
    results = profile.out / "results.json"
    if results.is_file():  # this CPU's own previous run, when it trained and scored
        try:
            found = previous_rates(json.loads(results.read_text(encoding="utf-8")), cpu_key(), train, score)
        except (OSError, ValueError):
            found = None
    return estimate(stages, skipped, requests, found or rates(profile, train, score, measure_fn, log))
