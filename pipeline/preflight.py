"""`./run.sh preflight [--profile competition]`: the profile's own stage configs end to end on a CPU.

prepare (the profile's data when present, else the sample) → stage 1 → merge →
stage 2 [→ stage 3, ORPO, with `preference: true`] → submit on a handful of test items → check-submission, through the same
code the real run uses, with a tiny random model of the base model's architecture
built in place and only the keys in axolotl_configs/preflight.yml overridden (printed
first). Everything is written under outputs/preflight/. On failure it names the step
and the child's error (for a bad config key, Axolotl's message names the key) and
exits non-zero. It never downloads weights.

`--gpus N` (make preflight GPUS=N) runs stage 2 as `make train-stage2 GPUS=N` does (the same
`command()`: accelerate launch, DeepSpeed ZeRO-3) as N processes on the CPU over gloo, once
stopped after a step with its ZeRO-3 checkpoint kept, then resumed from it.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import os
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
CPU_DIST = ROOT / "pipeline" / "cpu_dist"  # its sitecustomize.py hands accelerate the gloo backend on a CPU


class PreflightError(MaerakError):
    """A failed step: the message names the step and what was at fault."""


def load_overrides(path: Path = OVERRIDES) -> dict[str, Any]:
    return load_yaml(path, "preflight overrides file")


def override_stage(cfg: dict[str, Any], overrides: dict[str, Any], stage: int, gpus: int = 1) -> dict[str, Any]:
    """The stage config the preflight runs: `cfg` with the preflight's stage keys replaced (pure);
    with several processes, stage 2 also takes the `gpus:` keys."""
    out = copy.deepcopy(cfg)
    out.update(overrides.get("stages") or {})
    out.update(overrides.get(f"stage{stage}") or {})
    if gpus > 1 and stage == 2:
        out.update(overrides.get("gpus") or {})
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


def write_configs(src: Path, overrides: dict[str, Any], profile: Profile, base: Path, gpus: int = 1) -> Path:
    """The one place stage configs are written rather than read: the real ones (`src`) with the
    overrides and this run's paths (its outputs, the tiny `base`) into the preflight profile's
    axolotl_configs folder, for the stages the profile runs (it keeps the real one's `preference:`);
    Axolotl then runs them as they are."""
    from training import axolotl_run as ar

    folder = profile.path("axolotl_configs")
    folder.mkdir(parents=True, exist_ok=True)
    for stage in profile.training_stages:
        name = STAGE_FILES[stage]
        cfg = override_stage(load_yaml(src / name, "Axolotl config"), overrides, stage, gpus)
        cfg = ar.placed(cfg, profile, stage, base_model=base if stage == 1 else None)
        (folder / name).write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return folder


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


def build_base(real: Profile, overrides: dict[str, Any], target: Path) -> str:
    """Saves a tiny random Gemma-2 + tokenizer in `target`; returns which tokenizer it has.
    The tokenizer is of the base model's family, so prepare's length check (which counts with the
    base model's tokenizer) gives the real run's verdict: the base's own from the local cache, else
    the embedded Gemma-3's (262k pieces; gemma-2's has 256k, and the two agree to a few tokens on
    Korean). A BPE trained on the task's text split Korean 10% finer and failed official rows."""
    from maerak.tiny_model import build_gemma2
    from training.embed_model import embedded_tokenizer

    tokenizer = real_tokenizer(real.base_model_name)
    kind = f"the real tokenizer of {real.base_model_name} (local cache)"
    if tokenizer is None:
        embedded = Path(get_profile("sample", real.root).base_model)  # the embedded model, named once in its YAML
        tokenizer = embedded_tokenizer(embedded)
        where = embedded.relative_to(real.root) if embedded.is_relative_to(real.root) else embedded
        kind = f"the embedded Gemma-3 tokenizer ({len(tokenizer)} tokens, {where if (embedded / 'tokenizer.json').is_file() else 'rebuilt from the GGUF package'})"
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


@contextlib.contextmanager
def cpu_launch_env(cuda: bool | None = None):
    """What the launched processes need to form a gloo group on a CPU: the accelerate fix in
    pipeline/cpu_dist/ (read its docstring), DeepSpeed's CPU accelerator, and gloo on loopback.
    Nothing where torch sees CUDA: there the launch is the real one (DeepSpeed's CUDA accelerator,
    NCCL), and DS_ACCELERATOR=cpu inside an NCCL group would put DeepSpeed on the CPU."""
    if cuda is None:
        from maerak.profiles import has_gpu

        cuda = has_gpu()
    if cuda:
        yield
        return
    keep = {k: os.environ.get(k) for k in ("PYTHONPATH", "DS_ACCELERATOR", "GLOO_SOCKET_IFNAME")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CPU_DIST), keep["PYTHONPATH"]]))
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    try:
        yield
    finally:
        for key, value in keep.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def zero_checkpoint(ckpt: Path) -> tuple[int, int]:
    """(ranks, ZeRO stage) of a DeepSpeed checkpoint-N/: the ranks that wrote an optimizer
    partition, and the stage recorded in its model states."""
    import torch

    tags = [p for p in ckpt.glob("global_step*") if p.is_dir()]
    if len(tags) != 1:
        raise PreflightError(f"{ckpt}: expected one DeepSpeed global_step*/ folder, found {len(tags)}")
    parts = sorted(tags[0].glob("*zero_pp_rank_*_optim_states.pt"))
    states = sorted(tags[0].glob("*model_states.pt"))
    if not parts or not states:
        raise PreflightError(f"{tags[0]}: no ZeRO optimizer partitions or model states")
    saved = torch.load(states[0], map_location="cpu", weights_only=False)
    return len(parts), int(saved["ds_config"]["zero_optimization"]["stage"])


def stage2_several(profile: Profile, src: Path, gpus: int) -> list[tuple[str, Callable[[], str | None]]]:
    """Stage 2 as `make train-stage2 GPUS=N` runs it, N processes (on the CPU here, on GPUs in
    `make gpu-check`): a first run stopped after one step (its checkpoint kept), then `ar.train`,
    which resumes from that checkpoint. With N = 1 (gpu-check's one-GPU save and resume) there is no
    DeepSpeed checkpoint to inspect."""
    from training import axolotl_run as ar
    from training import resume

    def first() -> str:
        path, cfg = ar.stage_config(profile, 2)
        ar.check_inputs(profile, 2)
        out = profile.stage2_dir
        out.mkdir(parents=True, exist_ok=True)
        # The key ar.train computes (bf16 is pinned off in the preflight: nothing `auto` chose), so that
        # it takes the checkpoint as its own interrupted run's.
        resume.resume_point(out, ar.stage_run_key(profile, 2, path, cfg, None))
        with cpu_launch_env():
            prepared = ar.dataset_cache(profile.root, path, cfg, profile.stage_data(2), str(profile.merged_dir))
            ar.run(ar.command("axolotl.cli.train", path, gpus, ar.overrides(cfg, gpus, None, prepared) + ["--max_steps=1"]),
                   profile.root)
        ckpts = resume.checkpoints(out)
        if not ckpts or not (ckpts[-1] / resume.COMPLETE).is_file():
            raise PreflightError(f"{out}: the first run left no complete checkpoint to resume from")
        if gpus == 1:
            return f"{ckpts[-1].relative_to(profile.root)}: weights, optimizer and RNG states"
        ranks, zero = zero_checkpoint(ckpts[-1])
        if ranks != gpus or zero != 3:
            raise PreflightError(f"{ckpts[-1]}: {ranks} rank(s), ZeRO stage {zero}; expected {gpus} ranks, stage 3")
        return f"{ckpts[-1].relative_to(profile.root)}: DeepSpeed ZeRO stage {zero}, {ranks} ranks' optimizer partitions"

    def resumed() -> str:
        ckpt = resume.checkpoints(profile.stage2_dir)[-1]
        with cpu_launch_env():
            out = ar.train(profile, 2, gpus)
        return f"{gpus} processes, resumed from {ckpt.name} -> {out.relative_to(profile.root)}"

    return [(f"stage 2, {gpus} processes (accelerate + DeepSpeed ZeRO-3, gloo): one step, checkpoint kept",
             stage_step(profile, 2, src, first)),
            (f"stage 2, {gpus} processes: resumed from the ZeRO-3 checkpoint", stage_step(profile, 2, src, resumed))]


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
    parser.add_argument("--gpus", type=int, default=1,
                        help="N>1: stage 2 as N processes through accelerate + DeepSpeed ZeRO-3, as train-stage2 --gpus N")
    parser.add_argument("--overrides", type=Path, default=OVERRIDES, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=OUT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error("--gpus must be at least 1")

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
    if args.gpus > 1:
        print(f"stage 2: {args.gpus} processes, as `make train-stage2 GPUS={args.gpus}` launches them (accelerate + "
              f"DeepSpeed ZeRO-3), on the CPU over gloo; stopped after a step, then resumed from its checkpoint")
    out = real.root / args.out
    profile = preflight_profile(real, out / "axolotl_configs", data, args.out)
    profile.apply_env()  # offline: nothing is downloaded

    def configs() -> str:
        return str(write_configs(src, overrides, profile, Path(args.out) / "base", args.gpus))

    def base() -> str:
        return build_base(real, overrides, out / "base")

    steps: list[tuple[str, Callable[[], str | None]]] = [
        ("configs", configs),
        ("tiny base model", base),
        ("prepare", lambda: step_prepare(profile, overrides)),
        ("stage 1", stage_step(profile, 1, src, lambda: ar.train(profile, 1))),
        ("merge", stage_step(profile, 1, src, lambda: ar.merge(profile))),
        *(stage2_several(profile, src, args.gpus) if args.gpus > 1 else
          [("stage 2", stage_step(profile, 2, src, lambda: ar.train(profile, 2)))]),
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
