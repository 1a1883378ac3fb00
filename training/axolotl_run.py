"""`./run.sh train --stage 1|2|3 [--profile P] [--gpus N]` and `./run.sh merge [--profile P]`.

The YAML in axolotl_configs/<profile>/ is the file Axolotl runs, as it is (hyperparameters,
the base model, the seed and the paths all live there); this module never rewrites it. The
pipeline reads each stage's paths from it (`Profile.stage_paths`, maerak/profiles.py, which
checks they fit together), then runs Axolotl's CLI on it in a subprocess from the repository root.
Only what truly varies per run goes on Axolotl's command line as its own overrides:
`--resume_from_checkpoint=` (an interrupted run), `--deepspeed=` (several GPUs),
`--lora_model_dir=` (the merge), `--dataset_prepared_path=` (the tokenized-data cache, by content).

    stage 1: base_model (the profile's base), datasets[0].path, output_dir (e.g. stage1/)
             then merge-lora -> <stage-1 output_dir>/merged (unless --no-merge)
    stage 2: base_model <stage-1 output_dir>/merged, its own datasets[0].path and output_dir
    stage 3: (profiles with `preference: true`) ORPO, `rl: orpo`, base_model <stage-2 output_dir>
"""
from __future__ import annotations

import argparse
import collections
import copy
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from maerak import cpu_dtype, modes, progress
from maerak import fingerprint as fp
from maerak.errors import MaerakError, TrainError
from maerak.files import rel_path
from maerak.profiles import DEEPSPEED_DEFAULT, MERGED, Profile, has_gpu, require_gpu, resolve_profile
from training import resume
from training.stage_keys import check_keys

CODE_ROOT = Path(__file__).resolve().parent.parent  # where `training.answer_loss` (a plugin in the YAMLs) imports from


def placed(cfg: dict[str, Any], profile: Profile, stage: int, base_model: str | Path | None = None) -> dict[str, Any]:
    """`cfg` with its path keys moved under `profile.out` (and stage 1's base_model, when given):
    how the preflight and the tests write a stage config for a layout of their own (pure). The
    pipeline then reads those paths from the written file, as from the files in axolotl_configs/."""
    out = copy.deepcopy(cfg)
    where = rel_path(profile.out, profile.root)  # as the YAMLs write paths: relative to the root
    out["output_dir"] = f"{where}/stage{stage}"
    out["datasets"] = [{**(out.get("datasets") or [{}])[0], "path": f"{where}/prepared/stage{stage}.jsonl"}]
    out["dataset_prepared_path"] = f"{where}/axolotl_cache/stage{stage}"
    if stage == 2:
        out["base_model"] = f"{where}/stage1/{MERGED}"
    if stage == 3:
        out["base_model"] = f"{where}/stage2"
    if base_model is not None:
        out["base_model"] = str(base_model)
    if "tokenizer_config" in out:
        out["tokenizer_config"] = out["base_model"]
    return out


def stage_config(profile: Profile, stage: int) -> tuple[Path, dict[str, Any]]:
    """The stage's YAML and its contents; its paths checked to fit together (`Profile.stage_paths`)."""
    paths = profile.stage_paths(stage)
    return paths.config, profile.stage_config(stage)


# The files of a model folder that decide how text becomes tokens.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "chat_template.jinja", "chat_template.json")


def dataset_cache(root: Path, config: Path, cfg: dict[str, Any], dataset: Path, base_model: str) -> Path:
    """Where Axolotl keeps this stage's tokenized data: the YAML's dataset_prepared_path, in a
    subfolder named by the content of what the tokenized rows are made from (the training file,
    the stage YAML, the base model's tokenizer files, a hub model's id and pinned revision).

    Axolotl keys its own cache by config fields only (path, type, sequence_len, packing, the
    tokenizer's name: axolotl/utils/data/shared.py generate_dataset_hash_from_config) and loads it
    whenever that folder has files (load_preprocessed_dataset), so an edited training file with
    the same path would be trained on as it was. Other keys' folders are removed: nothing reads them."""
    base = Path(base_model)
    tokenizer = [base / name for name in TOKENIZER_FILES] if base.is_dir() else []
    key = fp.paths_digest([dataset, config, *tokenizer],
                          extra=[base_model, str(cfg.get("revision_of_model") or "")])[:16]
    parent = Path(cfg.get("dataset_prepared_path") or "last_run_prepared")
    parent = parent if parent.is_absolute() else root / parent
    if parent.is_dir():
        for old in parent.iterdir():
            if old.is_dir() and old.name != key and re.fullmatch(r"[0-9a-f]{16}", old.name):
                shutil.rmtree(old)
            elif re.fullmatch(r"[0-9a-f]{32}", old.name) and old.is_dir():  # Axolotl's own, keyed by config only
                shutil.rmtree(old)
    return parent / key


def overrides(cfg: dict[str, Any], gpus: int = 1, resume_from: Path | None = None,
              prepared: Path | None = None, bf16: bool | None = None) -> list[str]:
    """Axolotl's own command-line overrides for this run: the only run-time changes to the YAML.
    `bf16`: what `bf16: auto` resolved to on this CPU (maerak/cpu_dtype.py); Axolotl's own `auto`
    looks for a bf16 GPU only (axolotl/utils/config/__init__.py resolve_dtype), so on a CPU we say it."""
    extra = []
    if bf16 is not None and cfg.get("bf16") == "auto":
        extra.append(f"--bf16={bf16}")
    if gpus > 1 and not cfg.get("deepspeed"):
        extra.append(f"--deepspeed={DEEPSPEED_DEFAULT}")
    if resume_from is not None:
        extra.append(f"--resume_from_checkpoint={resume_from}")
    if prepared is not None:
        extra.append(f"--dataset_prepared_path={prepared}")
    return extra


def check_plugins(cfg: dict[str, Any], config: Path) -> None:
    """Axolotl logs a plugin it cannot import and trains without it; stop before that instead."""
    for name in cfg.get("plugins") or []:
        module = str(name).rpartition(".")[0]
        try:
            found = bool(module) and importlib.util.find_spec(module) is not None
        except ImportError:
            found = False
        if not found:
            raise TrainError(f"{config}: plugins: {name}: module {module or name!r} not importable")


def check_inputs(profile: Profile, stage: int) -> None:
    data = profile.stage_data(stage)
    if not data.is_file() or data.stat().st_size == 0:
        raise TrainError(f"{data}: training file missing or empty; make it with `make prepare PROFILE={profile.name}`")
    if stage == 1:
        base = profile.base_model
        if profile.base_model_is_local and not (Path(base) / "config.json").is_file():
            raise TrainError(f"{base}: base model missing; make it with `make model`")
    elif stage == 3:
        if not profile.config.preference:
            raise TrainError(f"profile {profile.name!r} has no preference stage (profiles.yml: {profile.name}.preference is false)")
        if not (profile.stage2_dir / "config.json").is_file():
            raise TrainError(f"{profile.stage2_dir}: stage-2 model missing; make it with `make train-stage2 PROFILE={profile.name}`")
    elif not (profile.merged_dir / "config.json").is_file():
        raise TrainError(
            f"{profile.merged_dir}: merged stage-1 model missing; make it with `make train-stage1 PROFILE={profile.name}` "
            f"(or `make merge PROFILE={profile.name}` if stage 1 finished)"
        )


def command(module: str, config: Path, gpus: int = 1, extra: list[str] | None = None) -> list[str]:
    """The Axolotl CLI invocation; several GPUs go through `accelerate launch`. `--multi_gpu` is
    said, not left to accelerate: without it and without a visible CUDA device (the preflight's
    CPU run) `accelerate launch` starts one process, whatever `--num_processes` says
    (accelerate/commands/launch.py `_validate_launch_command`, then `simple_launcher`)."""
    if gpus > 1:
        head = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(gpus),
                "-m", module]
    else:
        head = [sys.executable, "-m", module]
    return head + [str(config)] + (extra or [])


def run(cmd: list[str], cwd: Path) -> float:
    print("$ " + " ".join(cmd), flush=True)
    env = dict(os.environ)
    env.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    paths = dict.fromkeys([str(cwd), str(CODE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    for arg in cmd:
        if arg.startswith("--dataset_prepared_path="):
            # The datasets library caches a loaded JSON file by path and mtime (datasets/data_files.py,
            # _get_single_origin_metadata): a same-mtime replacement (cp -p) would load the old rows.
            # Its cache goes into the content-keyed folder too.
            env["HF_DATASETS_CACHE"] = str(Path(arg.split("=", 1)[1]) / "datasets")
    env.setdefault("PYTHONUNBUFFERED", "1")
    start = time.perf_counter()
    # Streamed as it comes, and the tail kept, so a failure can quote the child's own error. The
    # training bar (transformers' tqdm: step/total, s/it, time left) redraws in a terminal and is
    # plain lines in a log file (maerak/progress.py).
    tail: collections.deque[str] = collections.deque(maxlen=200)
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        progress.relay(proc.stdout.fileno(), sys.stdout, tail.append)  # type: ignore[union-attr]
    sys.stdout.flush()
    if proc.returncode != 0:
        cause = error_lines(list(tail))
        raise TrainError(f"`{' '.join(cmd[1:4])} …` failed with exit status {proc.returncode}" + (f": {cause}" if cause else ""))
    return time.perf_counter() - start


def error_lines(lines: list[str]) -> str:
    """The child's last exception line and the two after it (pydantic puts the config key there)."""
    for i in range(len(lines) - 1, -1, -1):
        if re.match(r"^[\w.]*(Error|Exception)\b", lines[i].strip()):
            return " | ".join(x.strip() for x in lines[i : i + 3] if x.strip())
    return ""


def stage_base(profile: Profile, stage: int) -> str:
    """The weights a stage starts from."""
    return profile.base_model if stage == 1 else str(profile.merged_dir) if stage == 2 else str(profile.stage2_dir)


def stage_run_key(profile: Profile, stage: int, path: Path, cfg: dict[str, Any], bf16: bool | None) -> str:
    """The resume key of a stage run: its YAML, data and base weights (training/resume.py run_key), the
    pinned revision of stage 1's hub model, and what `bf16: auto` chose on this CPU (None: not auto),
    so that a run moved to a CPU that chooses otherwise starts over instead of resuming in another dtype."""
    pinned = (str(cfg.get("revision_of_model") or ""),) if stage == 1 else ()
    chosen = () if bf16 is None else (f"bf16={bf16}",)
    return resume.run_key(path, profile.stage_data(stage), stage_base(profile, stage), pinned + chosen)


def train(profile: Profile, stage: int, gpus: int = 1) -> Path:
    """Run one Axolotl training stage on its YAML as it is; returns its output dir."""
    profile.apply_env()
    path, cfg = stage_config(profile, stage)
    check_plugins(cfg, path)
    check_keys(cfg, path)  # a misspelled key would be ignored by Axolotl: refused here, before anything runs
    check_inputs(profile, stage)
    out = profile.stage1_dir if stage == 1 else profile.stage2_dir if stage == 2 else profile.stage3_dir
    out.mkdir(parents=True, exist_ok=True)
    modes.clear_record(out)  # a mode record never outlives the weights it describes
    bf16 = None
    if cfg.get("bf16") == "auto" and not has_gpu():
        bf16 = cpu_dtype.resolve("auto", profile.out / cpu_dtype.CACHE_DIR).dtype == "bfloat16"
        print(f"stage {stage}: bf16: auto -> {'bf16 autocast, float32 master weights' if bf16 else 'float32'}", flush=True)
    # An interrupted run of this same stage resumes from its last checkpoint (training/resume.py).
    base = stage_base(profile, stage)
    last = resume.resume_point(out, stage_run_key(profile, stage, path, cfg, bf16))
    if last is not None:
        print(f"stage {stage}: resuming from {last} (an interrupted run with the same inputs)", flush=True)
    prepared = dataset_cache(profile.root, path, cfg, profile.stage_data(stage), base)
    seconds = run(command("axolotl.cli.train", path, gpus, overrides(cfg, gpus, last, prepared, bf16)), profile.root)
    print(f"stage {stage}: trained in {seconds:.0f} s -> {out}")
    if stage >= 2:  # a checkpoint submit may score: stage 2, and stage 3 (ORPO) with preference: true
        ensure_final_checkpoint(out, Path(base))
        if (trained := modes.prepared_mode(profile.prepared / "report.json")) is not None:
            modes.write_record(out, trained)  # what submit scores it in (maerak/modes.py)
    resume.keep_log_history(out)
    resume.finish(out)
    return out


def merge(profile: Profile) -> Path:
    """Merge the stage-1 LoRA into its base with Axolotl's merge-lora (-> stage1/merged)."""
    profile.apply_env()
    path, cfg = stage_config(profile, 1)
    check_keys(cfg, path)
    if not (profile.stage1_dir / "adapter_config.json").is_file():
        raise TrainError(f"{profile.stage1_dir}: no LoRA adapter; run `make train-stage1 PROFILE={profile.name}` first")
    seconds = run(command("axolotl.cli.merge_lora", path, extra=[f"--lora_model_dir={profile.stage1_dir}"]), profile.root)
    ensure_final_checkpoint(profile.merged_dir, None)
    print(f"merged in {seconds:.0f} s -> {profile.merged_dir}")
    return profile.merged_dir


def ensure_final_checkpoint(out: Path, base: Path | None) -> None:
    """Inference loads the stage dir directly: it must hold weights, config and tokenizer."""
    if not (out / "config.json").is_file() or not any(out.glob("*.safetensors")):
        raise TrainError(f"{out}: Axolotl finished but left no model weights in the directory root")
    if not (out / "tokenizer_config.json").is_file():
        if base is None or not (base / "tokenizer_config.json").is_file():
            raise TrainError(f"{out}: no tokenizer saved with the model")
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(base).save_pretrained(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="./run.sh train", description="Run an Axolotl stage on a profile.")
    parser.add_argument("--stage", type=int, choices=(1, 2, 3),
                        help="1: QLoRA (then merge), 2: full fine-tune, 3: ORPO (profiles with preference: true)")
    parser.add_argument("--profile", help="sample, official-cpu or competition (default: auto, as every verb)")
    parser.add_argument("--gpus", type=int, default=1, help="N>1 launches through accelerate (+ DeepSpeed ZeRO-3)")
    parser.add_argument("--no-merge", action="store_true", help="stage 1: leave the LoRA unmerged")
    parser.add_argument("--merge-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error("--gpus must be at least 1")
    profile, _ = resolve_profile(args.profile)
    try:
        # needs_gpu: one line now (no CUDA, the GPU's arch, bf16, memory, offload), not a CUDA error minutes in
        require_gpu(profile, (1,) if args.merge_only else (args.stage,) if args.stage else None, args.gpus)
        if args.merge_only:
            merge(profile)
            return 0
        if args.stage is None:
            parser.error("--stage 1|2|3 is required")
        train(profile, args.stage, args.gpus)
        if args.stage == 1 and not args.no_merge:
            merge(profile)
    except MaerakError as exc:  # TrainError, or an unreadable config
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
