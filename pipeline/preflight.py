"""`./run.sh preflight [--profile competition]`: the profile's own stage configs end to end on a CPU.

prepare (the profile's data when present, else the sample) → stage 1 → merge →
stage 2 [→ stage 3, ORPO, with `preference: true`] → submit on a handful of test items → check-submission, through the same
code the real run uses, with a tiny random model of the base model's architecture
built in place and only the keys in axolotl_configs/preflight.yml overridden (printed
first). Everything is written under outputs/preflight/. On failure it names the step
and the child's error (for a bad config key, Axolotl's message names the key) and
exits non-zero. It never downloads weights.
"""
from __future__ import annotations

import argparse
import copy
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from maerak.errors import DataError, EmptyStage, MaerakError, TrainError
from maerak.files import atomic_write_json, load_yaml
from maerak.profiles import ROOT, SPLITS, STAGE_FILES, Profile, get_profile

OVERRIDES = ROOT / "axolotl_configs" / "preflight.yml"
OUT = "outputs/preflight"


class PreflightError(MaerakError):
    """A failed step: the message names the step and what was at fault."""


def load_overrides(path: Path = OVERRIDES) -> dict[str, Any]:
    return load_yaml(path, "preflight overrides file")


def override_stage(cfg: dict[str, Any], overrides: dict[str, Any], stage: int) -> dict[str, Any]:
    """The stage config the preflight runs: `cfg` with the preflight's stage keys replaced (pure)."""
    out = copy.deepcopy(cfg)
    out.update(overrides.get("stages") or {})
    out.update(overrides.get(f"stage{stage}") or {})
    return out


def data_dir(profile: Profile) -> tuple[str, str]:
    """The profile's data when all three files are there, else the shipped sample."""
    if all(profile.split_file(s).is_file() for s in SPLITS):
        return str(profile.settings["data_dir"]), "the profile's data"
    return "data/sample", f"the sample (no {profile.settings['data_dir']}/{{train,dev,test}}.json)"


def preflight_profile(real: Profile, configs: Path, data: str, out: str = OUT) -> Profile:
    """`real` with the overridden configs (they name the tiny base), the data chosen and outputs under `out`.
    The name stays the real one, so the profile's own sources.yml settings apply."""
    settings = {**real.settings, "axolotl_configs": str(configs), "data_dir": data, "out": out, "offline": True}
    return Profile(name=real.name, settings=settings, root=real.root)


def suspect_keys(cfg: dict[str, Any], cause: str) -> list[str]:
    """Top-level config keys an error message points at: named in it (pydantic names the field),
    or whose string value it quotes (transformers quotes a bad scheduler name, not the key)."""
    found = []
    for key, value in cfg.items():
        named = re.search(rf"(?<![\w.]){re.escape(str(key))}(?![\w])", cause)
        quoted = isinstance(value, str) and len(value) >= 4 and re.search(rf"(?<![\w/]){re.escape(value)}(?![\w/])", cause)
        if named or quoted:
            found.append(str(key))
    return found


def stage_step(profile: Profile, stage: int, src: Path, run: Callable[[], Path]) -> Callable[[], str]:
    """A training/merge step whose failure also names the config keys the child's error points at."""
    def step() -> str:
        try:
            return str(run())
        except TrainError as exc:
            cause = str(exc).split("failed with exit status", 1)[-1]
            path = profile.axolotl_config(stage)
            keys = suspect_keys(load_yaml(path), cause) if path.is_file() else []
            where = f"; config key(s) at fault: {', '.join(keys)} (in {src / STAGE_FILES[stage]})" if keys else ""
            raise PreflightError(f"{exc}{where}") from exc

    return step


def real_tokenizer(name: str):
    """The base model's tokenizer from the local Hugging Face cache, or None (never a download)."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(name, local_files_only=True)
    except Exception:  # not cached, gated, or no network: the preflight builds one instead
        return None


def build_base(real: Profile, overrides: dict[str, Any], corpus_files: list[Path], target: Path) -> str:
    """Saves a tiny random Gemma-2 + tokenizer in `target`; returns which tokenizer it has."""
    from maerak.tiny_model import build_bpe_tokenizer, build_gemma2, task_corpus

    tokenizer = real_tokenizer(real.base_model_name)
    kind = f"the real tokenizer of {real.base_model_name} (local cache)"
    if tokenizer is None:
        tokenizer = build_bpe_tokenizer(task_corpus(corpus_files), int(overrides.get("tokenizer_vocab_size", 2000)))
        kind = f"a byte-level BPE ({len(tokenizer)} tokens) built in place"
    model = build_gemma2(tokenizer, overrides["model"], seed=real.seed)
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    return kind


def step_prepare(profile: Profile, overrides: dict[str, Any]) -> str:
    from preprocessing.config import load_config
    from preprocessing.prepare import run

    opts = overrides.get("prepare") or {}
    try:
        report = run(profile, load_config(profile), distill_on=bool(opts.get("distill", False)),
                     magpie_on=bool(opts.get("magpie", False)), progress=False)
    except DataError as exc:
        raise PreflightError("; ".join(str(p) for p in exc.problems[:5])) from exc
    except EmptyStage as exc:
        raise PreflightError("a stage has no rows") from exc
    except FileNotFoundError as exc:
        raise PreflightError(str(exc)) from exc
    stages = report.as_dict()["stages"]
    return ", ".join(f"{name} {info['rows']} rows" for name, info in stages.items())


def step_submit(profile: Profile, real: Profile, n_items: int) -> str:
    from inference.check_submission import main as check_main
    from inference.submit import main as submit_main
    from maerak.schema import load_items

    items = [it.raw for it in load_items(profile.split_file("test"))[0][:n_items]]
    test = profile.out / "test_items.json"
    atomic_write_json(test, items)
    # The real profile's scoring settings (dtype, batch size, max length) on the final checkpoint (stage 2 or 3).
    code = submit_main(["--profile", real.name, "--model", str(profile.final_dir), "--input", str(test),
                        "--output", str(profile.submission), "--no-cache", "--quiet"])
    if code != 0:
        raise PreflightError(f"submit exited {code}")
    if check_main(["--submission", str(profile.submission), "--test", str(test)]) != 0:
        raise PreflightError(f"{profile.submission}: check-submission failed")
    return f"{len(items)} items -> {profile.submission.relative_to(profile.root)}"


def run_steps(steps: list[tuple[str, Callable[[], str | None]]]) -> dict[str, float]:
    """Runs (name, fn) in order; the first failure is a PreflightError naming its step."""
    timings: dict[str, float] = {}
    for i, (name, fn) in enumerate(steps, 1):
        print(f"\n=== preflight [{i}/{len(steps)}] {name}", flush=True)
        start = time.perf_counter()
        try:
            note = fn()
        except MaerakError as exc:  # a PreflightError, TrainError, ConfigError...: its own one line
            raise PreflightError(f"step '{name}': {exc}") from exc
        except Exception as exc:  # an unexpected failure still names its step
            raise PreflightError(f"step '{name}': {type(exc).__name__}: {exc}") from exc
        timings[name] = round(time.perf_counter() - start, 1)
        print(f"=== {name}: ok in {timings[name]} s{f' ({note})' if note else ''}", flush=True)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run.sh preflight", description=__doc__.split("\n\n")[0])
    # Its purpose is the GPU profile on a machine without one, so it does not auto-choose (that would be sample).
    parser.add_argument("--profile", default="competition", help="whose stage configs to run (default: competition)")
    parser.add_argument("--configs", type=Path, help="stage-config folder (default: the profile's axolotl_configs)")
    parser.add_argument("--overrides", type=Path, default=OVERRIDES, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=OUT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    from training import axolotl_run as ar

    real = get_profile(args.profile)
    overrides = load_overrides(args.overrides)
    src = Path(args.configs or real.path("axolotl_configs"))
    print(f"maerak preflight: profile '{real.name}' stage configs from {src}, on a CPU, tiny random model")
    print(f"--- what differs from the real run ({args.overrides}):")
    print(args.overrides.read_text(encoding="utf-8").rstrip())
    print(f"--- and this run's own paths: base_model {args.out}/base (the tiny model), every output under {args.out}/")
    data, why = data_dir(real)
    print(f"data: {data} ({why})")
    out = real.root / args.out
    profile = preflight_profile(real, out / "axolotl_configs", data, args.out)
    profile.apply_env()  # offline: nothing is downloaded

    def configs() -> str:
        # The one place stage configs are written rather than read: the real ones with the overrides
        # and this run's paths (outputs/preflight/, the tiny base); Axolotl then runs them as they are.
        for stage in real.training_stages:
            name = STAGE_FILES[stage]
            cfg = override_stage(load_yaml(src / name, "Axolotl config"), overrides, stage)
            cfg = ar.placed(cfg, profile, stage, base_model=Path(args.out) / "base" if stage == 1 else None)
            (out / "axolotl_configs").mkdir(parents=True, exist_ok=True)
            (out / "axolotl_configs" / name).write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True),
                                                        encoding="utf-8")
        return str(out / "axolotl_configs")

    def base() -> str:
        files = [profile.split_file(s) for s in SPLITS]
        return build_base(real, overrides, files, out / "base")

    steps: list[tuple[str, Callable[[], str | None]]] = [
        ("configs", configs),
        ("tiny base model", base),
        ("prepare", lambda: step_prepare(profile, overrides)),
        ("stage 1", stage_step(profile, 1, src, lambda: ar.train(profile, 1))),
        ("merge", stage_step(profile, 1, src, lambda: ar.merge(profile))),
        ("stage 2", stage_step(profile, 2, src, lambda: ar.train(profile, 2))),
        *([("stage 3 (ORPO)", stage_step(profile, 3, src, lambda: ar.train(profile, 3)))] if real.config.preference else []),
        ("submit + check-submission", lambda: step_submit(profile, real, int((overrides.get("submit") or {}).get("items", 8)))),
    ]
    total = time.perf_counter()
    try:
        timings = run_steps(steps)
    except PreflightError as exc:
        print(f"\npreflight: FAILED at {exc}", file=sys.stderr)
        return 1
    timings["total"] = round(time.perf_counter() - total, 1)
    atomic_write_json(out / "timings.json", timings)
    print(f"\npreflight: OK — profile '{real.name}' ran end to end on a CPU in {timings['total']} s ({out / 'timings.json'})")
    print("not checked here (needs a GPU): memory, bf16/tf32 kernels, 8-bit AdamW, Axolotl's CUDA LoRA kernels, "
          "speed, the full epochs; see JUDGES.md §6")
    return 0


if __name__ == "__main__":
    sys.exit(main())
