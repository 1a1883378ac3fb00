"""Profiles and paths: the one place that says where each pipeline file lives."""
from __future__ import annotations

import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
PROFILES_FILE = ROOT / "profiles.yml"
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class Profile:
    name: str
    settings: dict[str, Any]
    root: Path = ROOT

    def path(self, key: str) -> Path:
        return self.root / self.settings[key]

    @property
    def base_model(self) -> str:
        value = self.settings["base_model"]
        local = self.root / value
        # A hub id (competition) stays a string unless the user put the weights in models/.
        return str(local) if local.exists() or value.startswith("models/") else value

    @property
    def seed(self) -> int:
        return int(self.settings.get("seed", 42))

    def apply_env(self) -> None:
        """Offline profiles never touch a hub (a closed network otherwise means minutes of retries)."""
        if self.settings.get("offline"):
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    @property
    def scoring(self) -> dict[str, Any]:
        return dict(self.settings.get("scoring", {}))

    @property
    def scoring_mode(self) -> str:
        """letters (the answer letter's logit) or options (each option's log-likelihood): the
        scorer and the training rows prepare writes follow it."""
        from maerak.prompt import MODES

        mode = self.scoring.get("mode", "letters")
        if mode not in MODES:
            raise SystemExit(f"{PROFILES_FILE}: {self.name}: scoring.mode: {mode!r} is not one of {', '.join(MODES)}")
        return mode

    @property
    def vllm(self) -> dict[str, Any]:
        """vLLM engine settings for scoring and distillation (e.g. tensor_parallel_size)."""
        return dict(self.settings.get("vllm") or {})

    def split_file(self, split: str) -> Path:
        return self.path("data_dir") / f"{split}.json"

    def axolotl_config(self, stage: int) -> Path:
        name = {1: "stage1_qlora.yml", 2: "stage2_full.yml"}[stage]
        return self.path("axolotl_configs") / name

    # Everything a run writes lives under outputs/<profile>/ (the preflight moves it with `out`).
    @property
    def out(self) -> Path:
        return self.root / self.settings.get("out", f"outputs/{self.name}")

    @property
    def prepared(self) -> Path:
        return self.out / "prepared"

    @property
    def stage1_dir(self) -> Path:
        return self.out / "stage1"

    @property
    def merged_dir(self) -> Path:
        return self.out / "stage1" / "merged"

    @property
    def stage2_dir(self) -> Path:
        return self.out / "stage2"

    @property
    def submission(self) -> Path:
        return self.out / "submission.json"

    @property
    def dev_predictions(self) -> Path:
        return self.out / "dev_predictions.json"

    @property
    def eval_dir(self) -> Path:
        return self.out / "eval"

    @property
    def manifest(self) -> Path:
        return self.out / "manifest.json"


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def get_profile(name: str, root: Path = ROOT) -> Profile:
    profiles = load_profiles(root / "profiles.yml")
    if name not in profiles:
        raise SystemExit(f"unknown profile {name!r}; profiles.yml has: {', '.join(profiles)}")
    return Profile(name=name, settings=profiles[name], root=root)


def has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return shutil.which("nvidia-smi") is not None


def auto_profile(root: Path = ROOT) -> tuple[str, str]:
    """The profile `reproduce` runs when none is named, and why."""
    raw = root / "data" / "raw"
    present = [s for s in SPLITS if (raw / f"{s}.json").exists()]
    if len(present) < len(SPLITS):
        return "sample", f"no official data in {raw.relative_to(root)}/ (need {', '.join(s + '.json' for s in SPLITS)})"
    if not has_gpu():
        return "official-cpu", ("official data found, but no CUDA GPU: the embedded 270M model on the official "
                                "files, option-likelihood scoring (the competition profile needs a GPU)")
    return "competition", "official data and a CUDA GPU found"


def resolve_profile(name: str | None, root: Path = ROOT, announce: bool = True) -> tuple[Profile, str]:
    """The one default every verb uses: the profile named, else `auto_profile`'s choice (said on stderr)."""
    if name:
        return get_profile(name, root), "named on the command line"
    name, why = auto_profile(root)
    if announce:
        print(f"maerak: profile '{name}' ({why}; --profile or PROFILE= to choose)", file=sys.stderr)
    return get_profile(name, root), why


def seed_everything(seed: int) -> None:
    """Seeds Python, NumPy and torch; Axolotl gets the same seed from its config."""
    random.seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:
        pass
    try:
        import torch

        torch.manual_seed(seed)
    except ImportError:
        pass
