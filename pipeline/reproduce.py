"""`./run.sh reproduce [--profile P]`: the whole pipeline, then dev accuracy and a manifest.

validate → prepare → stage 1 (QLoRA) → merge → stage 2 (full) [→ stage 3 (ORPO),
profiles with `preference: true`] → submit (test) → predict dev → evaluate → manifest. Each step is the same module the single
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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inference.submit import probs_path
from maerak import budget, cpu_dtype, stamps
from maerak.clean import RULES_FILE
from maerak.errors import ConfigError
from maerak.files import atomic_write_json
from maerak.imports import PACKAGES
from maerak.profiles import RAW_DATA, ROOT, SPLITS, Profile, require_gpu, resolve_profile, seed_everything
from maerak.results import reproduce_record
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
    code: tuple[Path, ...] = ()  # the source files it runs (stamps.code_files); fingerprinted with the inputs
    # Caches it reads and writes, keyed inside by the content they hold (Axolotl's tokenized data,
    # training/axolotl_run.py dataset_cache): neither inputs nor outputs of the step.
    caches: tuple[Path, ...] = ()


def plugin_modules(profile: Profile, stage: int) -> list[str]:
    """Project modules a stage YAML names as Axolotl plugins or trainer class: Axolotl imports them, we do not."""
    cfg = profile.stage_config(stage)
    names = [str(p).rpartition(".")[0] for p in [*(cfg.get("plugins") or []), *filter(None, [cfg.get("trainer_cls")])]]
    return [n for n in names if n.split(".")[0] in PACKAGES]


def magpie_generated(profile: Profile) -> bool:
    """Whether prepare generates Magpie pairs (sources config magpie_generate.enabled)."""
    from preprocessing.config import load_config

    try:
        return bool(load_config(profile).magpie_generate.enabled)
    except ConfigError:  # prepare itself says what is wrong with the file
        return False


def deepspeed_files(profile: Profile, stage: int) -> tuple[Path, ...]:
    """The DeepSpeed JSON a stage runs with: its YAML's `deepspeed:`, and the launcher's default
    (training/axolotl_run.py DEEPSPEED_DEFAULT, used with --gpus N when the YAML names none)."""
    from training.axolotl_run import DEEPSPEED_DEFAULT

    named = profile.stage_config(stage).get("deepspeed")
    return tuple(profile.root / p for p in dict.fromkeys(filter(None, [named, DEEPSPEED_DEFAULT])))


def plan(profile: Profile) -> list[Step]:
    """The steps for a profile with their inputs, outputs and code: data in, no side effects.
    A step's inputs are files it reads, including the outputs of the steps before it (paths
    as the stage YAMLs state them), and the config files it reads."""
    p = ("--profile", profile.name)
    root = profile.root
    splits = tuple(profile.split_file(s) for s in SPLITS)
    base = Path(profile.base_model)
    conf = root / "profiles.yml"
    stage_yml = (profile.axolotl_config(1), profile.axolotl_config(2))
    data = (profile.stage_data(1), profile.stage_data(2))
    # prepare writes a file per training stage (stage 3's preference pairs with preference: true)
    prep_yml = tuple(profile.axolotl_config(n) for n in profile.training_stages)
    prep_data = tuple(profile.stage_data(n) for n in profile.training_stages)
    rules = root / RULES_FILE.relative_to(ROOT)  # the cleaning rules: prepare and the scorer apply them
    # Magpie pairs: prepare generates them (magpie_generate.enabled) into this folder, an output
    # then; otherwise a folder it only reads. Never both: a step writing its own input re-runs.
    magpie = profile.out / "magpie"
    magpie_made = magpie_generated(profile)
    # DeepSpeed: stage 2 reads the JSON its YAML names, or the launcher's default with --gpus N.
    ds = deepspeed_files(profile, 2)

    def cache(stage: int) -> tuple[Path, ...]:
        where = profile.stage_config(stage).get("dataset_prepared_path")
        return (root / where,) if where else ()

    def code(verb: str, *extra: str) -> tuple[Path, ...]:
        # pipeline.cli: the entry point every verb runs through (run_verb)
        return stamps.code_files(("pipeline.cli", VERBS[verb].module, *extra), root)

    train = code("train-stage1", *plugin_modules(profile, 1))
    # stages 2-3 read the mode prepare wrote its rows for (maerak/modes.py prepared_mode) into the
    # checkpoint's mode record
    mode_report = profile.prepared / "report.json"
    steps = []
    if profile.config.offline:
        steps.append(Step("model", "model", p, inputs=(conf, stage_yml[0]), outputs=(base,), owned=False,
                          code=code("model")))
    steps += [
        Step("validate", "validate", p, inputs=(conf, *splits), code=code("validate")),
        Step("prepare", "prepare", p,
             inputs=(conf, profile.path("data_dir"), root / "data" / "external", profile.sources,
                     rules, *(() if magpie_made else (magpie,)), *prep_yml, base),
             outputs=(profile.prepared, *(d for d in prep_data if profile.prepared not in d.parents),
                      *((magpie,) if magpie_made else ())),
             code=code("prepare")),
        Step("train-stage1", "train-stage1", ("--no-merge", *p),
             inputs=(conf, data[0], stage_yml[0], base), outputs=(profile.stage1_dir,), code=train, caches=cache(1)),
        Step("merge", "merge", p,
             inputs=(conf, profile.stage1_dir / "adapter_config.json", profile.stage1_dir / "adapter_model.safetensors",
                     stage_yml[0], base),
             # Axolotl's merge loads stage 1's YAML, and with it the plugins it names
             outputs=(profile.merged_dir,), fresh=True, code=code("merge", *plugin_modules(profile, 1))),
        Step("train-stage2", "train-stage2", p,
             inputs=(conf, data[1], *stage_yml, *ds, profile.merged_dir, mode_report), outputs=(profile.stage2_dir,),
             code=code("train-stage2", *plugin_modules(profile, 2)), caches=cache(2)),
    ]
    if profile.config.preference:  # ORPO on the stage-2 model; submit then scores stage 3's checkpoint
        steps.append(Step("train-stage3", "train-stage3", p,
                          # stages 1-2's YAMLs: where their outputs are (the stage-2 model it starts from)
                          inputs=(conf, profile.stage_data(3), *stage_yml, profile.axolotl_config(3), profile.stage2_dir,
                                  mode_report),
                          outputs=(profile.stage3_dir,), code=code("train-stage3", *plugin_modules(profile, 3)),
                          caches=cache(3)))
    final = profile.final_dir
    steps += [
        Step("submit", "submit", p, inputs=(conf, profile.split_file("test"), rules, *prep_yml, final),
             outputs=(profile.submission, probs_path(profile.submission)), code=code("submit")),
        Step("predict-dev", "submit",
             (*p, "--input", str(profile.split_file("dev")), "--output", str(profile.dev_predictions)),
             inputs=(conf, profile.split_file("dev"), rules, *prep_yml, final),
             outputs=(profile.dev_predictions, probs_path(profile.dev_predictions)), code=code("submit")),
        Step("evaluate", "evaluate", p,
             inputs=(conf, profile.split_file("dev"), profile.dev_predictions, probs_path(profile.dev_predictions),
                     *prep_yml,  # where each stage's output_dir is (its training curves)
                     *(profile.stage_paths(n).output_dir / "trainer_state.json" for n in profile.training_stages)),
             outputs=(profile.eval_dir,), code=code("evaluate")),
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
              verbs: dict[str, Verb] = VERBS, after: dict[str, Callable[[], None]] | None = None) -> dict[str, float]:
    """Runs steps in order; stops at the first failure with the step's name. With a state_dir, a step
    whose stamp matches its inputs (and its code, and `code`: the environment) and whose outputs are intact
    is skipped; FORCE redoes all. `after[name]` is called once step `name` is done (run or skipped)."""
    after = after or {}
    timings: dict[str, float] = {}
    for i, step in enumerate(steps, 1):
        exclude = nested_outputs(step, steps)
        verb = verbs[step.verb]
        key = stamps.fingerprint((*step.inputs, *step.code), extra=[code, verb.module, *verb.args, *step.argv])
        head = f"\n=== [{i}/{len(steps)}] {step.name}"
        if state_dir is not None and not force and stamps.is_done(state_dir, step.name, key, step.outputs, exclude):
            print(f"{head}: skipped: done, and its inputs, code and outputs are unchanged (FORCE=1 redoes it)", flush=True)
            timings[step.name] = 0.0
            if step.name in after:
                after[step.name]()
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
        if step.name in after:
            after[step.name]()
    return timings


def print_estimate(profile: Profile, choices: dict) -> budget.Estimate:
    """The budget line (maerak/budget.py); information only: a failure to measure says so and the run goes on."""
    try:
        from training.step_rate import measure

        found = budget.profile_estimate(profile, choices, measure)
    except Exception as exc:  # noqa: BLE001 - the estimate informs, it never stops a run
        found = budget.Estimate((), (), 0, None, None, f"{type(exc).__name__}: {exc}")
    print(found.line(), flush=True)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run.sh reproduce", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", help=f"sample, official-cpu or competition (default: chosen from {RAW_DATA}/ and the GPU)")
    parser.add_argument("--force", action="store_true", help="redo every step, even those done with unchanged inputs")
    args = parser.parse_args(argv)
    try:
        profile, why = resolve_profile(args.profile, announce=False)  # a GPU torch cannot use stops here
        require_gpu(profile)  # needs_gpu: one line now, not a CUDA error minutes in
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    name = profile.name
    print(f"maerak reproduce: profile '{name}' ({why})")
    print(f"  {profile.config.description}")
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
    # dtype: auto is decided here, once for the run (cached per CPU), before any step reads it.
    choices = cpu_dtype.profile_choices(profile)
    dtypes = cpu_dtype.environment(choices)
    estimates: list[budget.Estimate] = []
    # CPU profiles: once prepare has written the rows, the run's steps and minutes on this CPU.
    after = {} if profile.config.needs_gpu else {"prepare": lambda: estimates.append(print_estimate(profile, choices))}
    timings = run_steps(plan(profile), profile.out / ".stamps", stamps.environment_version(profile.root, dtypes), args.force,
                        after=after)
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
    m = json.loads(metrics.read_text(encoding="utf-8")) if metrics.is_file() else None
    if m is not None:
        print(f"  dev accuracy: {m['accuracy']:.1%} ({m['correct']}/{m['n']}; profile {name}, mode {profile.scoring_mode})")
        for line in (m.get("degenerate") or {}).get("warnings", []):  # that accuracy measures no learning
            print(f"  {line}")
    print(f"  manifest:   {manifest}")
    # The numbers the docs show come from this file (`make results`: bench/render.py).
    record = reproduce_record(profile, timings, m)
    if estimates:  # estimate vs actual: `steps` above holds what each step took
        record["estimate"] = estimates[0].record(cpu_dtype.cpu_key())
        if estimates[0].seconds is not None:
            print(f"  estimate:   {estimates[0].seconds:.0f} s estimated at the start, {timings['total']:.0f} s taken")
    atomic_write_json(profile.out / "results.json", record)
    print(f"  results:    {profile.out / 'results.json'} (`make results` puts it in the docs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
