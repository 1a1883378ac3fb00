"""`./run.sh reproduce [--profile P]`: the whole pipeline, then dev accuracy and a manifest.

validate → prepare → stage 1 (QLoRA) → merge → stage 2 (full) → submit (test)
→ predict dev → evaluate → manifest. Each step is the same module the single
verbs run, so `make reproduce` and the step-by-step targets cannot drift apart.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import dataclass

from maerak.files import atomic_write_json
from maerak.profiles import Profile, resolve_profile, seed_everything


@dataclass(frozen=True)
class Step:
    name: str
    module: str
    argv: tuple[str, ...]


def plan(profile: Profile) -> list[Step]:
    """The steps for a profile, as (module, argv) pairs: data in, no side effects."""
    p = ("--profile", profile.name)
    steps = []
    if profile.settings.get("offline"):
        steps.append(Step("model", "training.embed_model", p))
    steps += [
        Step("validate", "preprocessing.validate", p),
        Step("prepare", "preprocessing.prepare", p),
        Step("train-stage1+merge", "training.axolotl_run", ("--stage", "1", *p)),
        Step("train-stage2", "training.axolotl_run", ("--stage", "2", *p)),
        Step("submit", "inference.submit", p),
        Step(
            "predict-dev",
            "inference.submit",
            (*p, "--input", str(profile.split_file("dev")), "--output", str(profile.dev_predictions)),
        ),
        Step("evaluate", "inference.evaluate", p),
    ]
    return steps


def run_steps(steps: list[Step]) -> dict[str, float]:
    """Runs steps in order; stops at the first failure with the step's name."""
    timings: dict[str, float] = {}
    for i, step in enumerate(steps, 1):
        print(f"\n=== [{i}/{len(steps)}] {step.name}: ./run.sh ... {' '.join(step.argv)}", flush=True)
        start = time.perf_counter()
        code = int(importlib.import_module(step.module).main(list(step.argv)) or 0)
        timings[step.name] = round(time.perf_counter() - start, 1)
        print(f"=== {step.name}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {timings[step.name]} s", flush=True)
        if code != 0:
            raise SystemExit(code)
    return timings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run.sh reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help="sample or competition (default: chosen from data/raw and the GPU)")
    args = parser.parse_args(argv)
    profile, why = resolve_profile(args.profile, announce=False)
    name = profile.name
    print(f"maerak reproduce: profile '{name}' ({why})")
    print(f"  {profile.settings.get('description', '')}")
    if name == "sample":
        print("  this is the SAMPLE profile: synthetic data and the embedded 270M model; its accuracy says the")
        print("  pipeline works, not how well the competition recipe scores. Put the official files in data/raw/")
        print("  and run on a CUDA GPU for the competition profile.")
    profile.apply_env()
    seed_everything(profile.seed)
    total = time.perf_counter()
    timings = run_steps(plan(profile))
    from maerak.manifest import write_manifest

    timings["total"] = round(time.perf_counter() - total, 1)
    atomic_write_json(profile.out / "timings.json", timings)
    manifest = write_manifest(profile, extra={"timings": timings})
    print("\n=== done")
    for step, seconds in timings.items():
        print(f"  {step:<20} {seconds:>8.1f} s")
    print(f"  submission: {profile.submission}")
    print(f"  dev report: {profile.eval_dir / 'report.md'}")
    print(f"  manifest:   {manifest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
