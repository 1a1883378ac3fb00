"""`./run.sh train --stage 1|2 [--profile P] [--gpus N]` and `./run.sh merge [--profile P]`.

Hyperparameters live only in axolotl_configs/<profile>/*.yml. This module injects
the paths and the seed from profiles.yml (pure: `resolve_config`, dict in, dict
out), writes the resolved config to outputs/<profile>/configs/stageN.yml (hashed
into the run manifest) and runs Axolotl's CLI on it in a subprocess:

    stage 1: base = profile.base_model, data = prepared/stage1.jsonl, out = stage1/
             then merge-lora -> stage1/merged (unless --no-merge)
    stage 2: base = stage1/merged,      data = prepared/stage2.jsonl, out = stage2/
"""
from __future__ import annotations

import argparse
import collections
import copy
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from maerak.files import atomic_write_text
from maerak.profiles import Profile, resolve_profile
from training import resume

DEEPSPEED_DEFAULT = "axolotl_configs/deepspeed/zero3.json"
CODE_ROOT = Path(__file__).resolve().parent.parent  # where `training.answer_loss` (a plugin in the YAMLs) imports from
STAGE_DATA = {1: "stage1.jsonl", 2: "stage2.jsonl"}


class TrainError(SystemExit):
    """A user-facing failure: message on stderr, exit status 1."""

    def __init__(self, message: str):
        super().__init__(message)


def load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TrainError(f"{path}: no such Axolotl config")
    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    if not isinstance(cfg, dict):
        raise TrainError(f"{path}: expected a YAML mapping")
    return cfg


def stage_paths(profile: Profile, stage: int) -> dict[str, str]:
    """The paths a stage reads and writes (strings, as Axolotl takes them)."""
    if stage == 1:
        base, out = profile.base_model, profile.stage1_dir
    elif stage == 2:
        base, out = str(profile.merged_dir), profile.stage2_dir
    else:
        raise TrainError(f"unknown stage {stage!r}; expected 1 or 2")
    return {
        "base_model": base,
        "dataset": str(profile.prepared / STAGE_DATA[stage]),
        "output_dir": str(out),
        "dataset_prepared_path": str(profile.out / "axolotl_cache" / f"stage{stage}"),
    }


def resolve_config(cfg: dict[str, Any], paths: dict[str, str], seed: int, gpus: int = 1) -> dict[str, Any]:
    """The config Axolotl runs: `cfg` with paths and seed injected; hyperparameters untouched."""
    out = copy.deepcopy(cfg)
    out["base_model"] = paths["base_model"]
    # The tokenizer always comes with the model being trained (the merged model carries it too).
    if "tokenizer_config" in out:
        out["tokenizer_config"] = paths["base_model"]
    datasets = out.get("datasets") or [{"type": "alpaca"}]
    if len(datasets) != 1:
        raise TrainError(f"expected exactly one dataset entry in the stage config, got {len(datasets)}")
    out["datasets"] = [{**datasets[0], "path": paths["dataset"], "ds_type": "json"}]
    out["output_dir"] = paths["output_dir"]
    out["dataset_prepared_path"] = paths["dataset_prepared_path"]
    out["seed"] = int(seed)
    if gpus > 1 and not out.get("deepspeed"):
        out["deepspeed"] = DEEPSPEED_DEFAULT
    return out


def dump_config(cfg: dict[str, Any]) -> str:
    header = "# Resolved by training/axolotl_run.py: axolotl_configs/<profile>/ + paths and seed from profiles.yml.\n"
    return header + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)


def resolved_path(profile: Profile, stage: int) -> Path:
    return profile.out / "configs" / f"stage{stage}.yml"


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


def check_inputs(profile: Profile, stage: int, paths: dict[str, str]) -> None:
    data = Path(paths["dataset"])
    if not data.is_file() or data.stat().st_size == 0:
        raise TrainError(f"{data}: training file missing or empty; make it with `make prepare PROFILE={profile.name}`")
    base = paths["base_model"]
    if stage == 1:
        looks_local = base.startswith("/") or profile.settings["base_model"].startswith("models/")
        if looks_local and not (Path(base) / "config.json").is_file():
            raise TrainError(f"{base}: base model missing; make it with `make model`")
    elif not (Path(base) / "config.json").is_file():
        raise TrainError(
            f"{base}: merged stage-1 model missing; make it with `make train-stage1 PROFILE={profile.name}` "
            f"(or `make merge PROFILE={profile.name}` if stage 1 finished)"
        )


def command(module: str, config: Path, gpus: int = 1, extra: list[str] | None = None) -> list[str]:
    """The Axolotl CLI invocation; several GPUs go through `accelerate launch`."""
    if gpus > 1:
        head = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(gpus), "-m", module]
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
    env.setdefault("PYTHONUNBUFFERED", "1")
    start = time.perf_counter()
    # Streamed as it comes, and the tail kept, so a failure can quote the child's own error.
    tail: collections.deque[str] = collections.deque(maxlen=200)
    with subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          errors="replace") as proc:
        for line in proc.stdout:  # type: ignore[union-attr]
            sys.stdout.write(line)
            tail.append(line.rstrip("\n"))
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


def write_resolved(profile: Profile, stage: int, gpus: int = 1, config_file: Path | None = None) -> tuple[Path, dict]:
    paths = stage_paths(profile, stage)
    cfg = resolve_config(load_yaml(config_file or profile.axolotl_config(stage)), paths, profile.seed, gpus)
    path = resolved_path(profile, stage)
    atomic_write_text(path, dump_config(cfg))
    return path, cfg


def train(profile: Profile, stage: int, gpus: int = 1, config_file: Path | None = None) -> Path:
    """Run one Axolotl training stage; returns its output dir."""
    profile.apply_env()
    path, cfg = write_resolved(profile, stage, gpus, config_file)
    check_plugins(cfg, config_file or profile.axolotl_config(stage))
    check_inputs(profile, stage, stage_paths(profile, stage))
    out = Path(cfg["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    # An interrupted run of this same stage resumes from its last checkpoint (training/resume.py).
    last = resume.resume_point(out, resume.run_key(path, Path(cfg["datasets"][0]["path"]), cfg["base_model"]))
    if last is not None:
        print(f"stage {stage}: resuming from {last} (an interrupted run with the same inputs)", flush=True)
    extra = [f"--resume_from_checkpoint={last}"] if last is not None else []
    seconds = run(command("axolotl.cli.train", path, gpus, extra), profile.root)
    print(f"stage {stage}: trained in {seconds:.0f} s -> {out}")
    if stage == 2:
        ensure_final_checkpoint(out, Path(cfg["base_model"]))
    resume.finish(out)
    return out


def merge(profile: Profile) -> Path:
    """Merge the stage-1 LoRA into its base with Axolotl's merge-lora (-> stage1/merged)."""
    profile.apply_env()
    path = resolved_path(profile, 1)
    if not path.is_file():
        path, _ = write_resolved(profile, 1)
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
    parser.add_argument("--stage", type=int, choices=(1, 2), help="1: QLoRA (then merge), 2: full fine-tune")
    parser.add_argument("--profile", help="sample or competition (default: auto, as every verb)")
    parser.add_argument("--gpus", type=int, default=1, help="N>1 launches through accelerate (+ DeepSpeed ZeRO-3)")
    parser.add_argument("--no-merge", action="store_true", help="stage 1: leave the LoRA unmerged")
    parser.add_argument("--merge-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.gpus < 1:
        parser.error("--gpus must be at least 1")
    profile, _ = resolve_profile(args.profile)
    try:
        if args.merge_only:
            merge(profile)
            return 0
        if args.stage is None:
            parser.error("--stage 1|2 is required")
        train(profile, args.stage, args.gpus)
        if args.stage == 1 and not args.no_merge:
            merge(profile)
    except TrainError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
