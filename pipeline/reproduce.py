"""`./run.sh reproduce [--profile P]`: the whole pipeline, then dev accuracy and a manifest.

validate → prepare → stage 1 (QLoRA) → merge → stage 2 (full) → submit (test)
→ predict dev → evaluate → manifest. Each step is the same module the single
verbs run, so `make reproduce` and the step-by-step targets cannot drift apart.

A re-run skips each step that finished before with the same inputs, code and
intact outputs (maerak/stamps.py), redoes an interrupted one (training stages
resume from their last checkpoint, training/resume.py), and `--force` redoes all.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from inference.submit import probs_path
from maerak import stamps
from maerak.clean import RULES_FILE
from maerak.files import atomic_write_json
from maerak.profiles import RAW_DATA, SPLITS, Profile, resolve_profile, seed_everything
from pipeline.cli import VERBS, Verb, run_verb


@dataclass(frozen=True)
class Step:
    """One node of the DAG: what it runs, what it reads and what it writes."""

    name: str
    verb: str                       # a ./run.sh verb (pipeline/cli.py VERBS)
    argv: tuple[str, ...]
    inputs: tuple[Path, ...] = ()
    outputs: tuple[Path, ...] = ()
    fresh: bool = False  # outputs removed before it runs (a half-written merge is never built upon)
    owned: bool = True   # False: outputs shared outside this run (the embedded model), never removed


def plan(profile: Profile) -> list[Step]:
    """The steps for a profile with their inputs and outputs: data in, no side effects.
    A step's inputs are files it reads, including the outputs of the steps before it."""
    p = ("--profile", profile.name)
    splits = tuple(profile.split_file(s) for s in SPLITS)
    base = Path(profile.base_model)
    conf = profile.root / "profiles.yml"
    stage_yml = (profile.axolotl_config(1), profile.axolotl_config(2))
    steps = []
    if profile.settings.get("offline"):
        steps.append(Step("model", "model", p, outputs=(base,), owned=False))
    steps += [
        Step("validate", "validate", p, inputs=splits),
        Step("prepare", "prepare", p,
             inputs=(conf, profile.path("data_dir"), profile.root / "data" / "external", profile.sources,
                     RULES_FILE, profile.out / "magpie", *stage_yml, base),
             outputs=(profile.prepared,)),
        Step("train-stage1", "train-stage1", ("--no-merge", *p),
             inputs=(conf, profile.stage_data(1), stage_yml[0], base),
             outputs=(profile.stage1_dir,)),
        Step("merge", "merge", p,
             inputs=(conf, profile.stage1_dir / "adapter_config.json", profile.stage1_dir / "adapter_model.safetensors",
                     stage_yml[0], base),
             outputs=(profile.merged_dir,), fresh=True),
        Step("train-stage2", "train-stage2", p,
             inputs=(conf, profile.stage_data(2), stage_yml[1], profile.merged_dir),
             outputs=(profile.stage2_dir,)),
        Step("submit", "submit", p, inputs=(conf, profile.split_file("test"), profile.stage2_dir),
             outputs=(profile.submission, probs_path(profile.submission))),
        Step("predict-dev", "submit",
             (*p, "--input", str(profile.split_file("dev")), "--output", str(profile.dev_predictions)),
             inputs=(conf, profile.split_file("dev"), profile.stage2_dir),
             outputs=(profile.dev_predictions, probs_path(profile.dev_predictions))),
        Step("evaluate", "evaluate", p,
             inputs=(profile.split_file("dev"), profile.dev_predictions, probs_path(profile.dev_predictions)),
             outputs=(profile.eval_dir,)),
    ]
    return steps


def nested_outputs(step: Step, steps: list[Step]) -> tuple[Path, ...]:
    """Other steps' outputs inside this step's output dirs (stage1/merged inside stage1/):
    left out of this step's listing, so the merge does not make stage 1 look changed."""
    return tuple(o for s in steps if s is not step for o in s.outputs
                 if any(mine in o.parents for mine in step.outputs))


def remove(paths: tuple[Path, ...]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def run_steps(steps: list[Step], state_dir: Path | None = None, code: str = "", force: bool = False,
              verbs: dict[str, Verb] = VERBS) -> dict[str, float]:
    """Runs steps in order; stops at the first failure with the step's name. With a state_dir, a step
    whose stamp matches its inputs (and the code) and whose outputs are intact is skipped; FORCE redoes all."""
    timings: dict[str, float] = {}
    for i, step in enumerate(steps, 1):
        exclude = nested_outputs(step, steps)
        verb = verbs[step.verb]
        key = stamps.fingerprint(step.inputs, extra=[code, verb.module, *verb.args, *step.argv])
        head = f"\n=== [{i}/{len(steps)}] {step.name}"
        if state_dir is not None and not force and stamps.is_done(state_dir, step.name, key, step.outputs, exclude):
            print(f"{head}: skipped: done, and its inputs, code and outputs are unchanged (FORCE=1 redoes it)", flush=True)
            timings[step.name] = 0.0
            continue
        print(f"{head}: ./run.sh {step.verb} {' '.join(step.argv)}", flush=True)
        if state_dir is not None:
            stamps.clear(state_dir, step.name)
            if step.owned and (step.fresh or force):
                remove(step.outputs)
        start = time.perf_counter()
        code_ = run_verb(step.verb, list(step.argv), verbs)
        timings[step.name] = round(time.perf_counter() - start, 1)
        print(f"=== {step.name}: {'ok' if code_ == 0 else f'FAILED (exit {code_})'} in {timings[step.name]} s", flush=True)
        if code_ != 0:
            raise SystemExit(code_)
        if state_dir is not None:
            stamps.mark_done(state_dir, step.name, key, step.outputs, exclude)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run.sh reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help=f"sample, official-cpu or competition (default: chosen from {RAW_DATA}/ and the GPU)")
    parser.add_argument("--force", action="store_true", help="redo every step, even those done with unchanged inputs")
    args = parser.parse_args(argv)
    profile, why = resolve_profile(args.profile, announce=False)
    name = profile.name
    print(f"maerak reproduce: profile '{name}' ({why})")
    print(f"  {profile.settings.get('description', '')}")
    if name == "sample":
        print("  this is the SAMPLE profile: synthetic data and the embedded 270M model; its accuracy says the")
        print(f"  pipeline works, not how well the competition recipe scores. Put the official files in {RAW_DATA}/")
        print("  and run on a CUDA GPU for the competition profile.")
    if name == "official-cpu":
        print(f"  this is the OFFICIAL-CPU profile: the official files in {RAW_DATA}/, but the embedded 270M model on CPU")
        print("  scored by option likelihood, not the competition recipe (that needs a CUDA GPU: PROFILE=competition).")
    profile.apply_env()
    seed_everything(profile.seed)
    total = time.perf_counter()
    timings = run_steps(plan(profile), profile.out / ".stamps", stamps.code_version(profile.root), args.force)
    from maerak.manifest import write_manifest

    timings["total"] = round(time.perf_counter() - total, 1)
    atomic_write_json(profile.out / "timings.json", timings)
    manifest = write_manifest(profile, extra={"timings": timings})
    print("\n=== done")
    for step, seconds in timings.items():
        print(f"  {step:<20} {seconds:>8.1f} s")
    print(f"  submission: {profile.submission}")
    print(f"  dev report: {profile.eval_dir / 'report.md'}")
    metrics = profile.eval_dir / "metrics.json"
    if metrics.is_file():
        m = json.loads(metrics.read_text(encoding="utf-8"))
        print(f"  dev accuracy: {m['accuracy']:.1%} ({m['correct']}/{m['n']}; profile {name}, mode {profile.scoring_mode})")
    print(f"  manifest:   {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
