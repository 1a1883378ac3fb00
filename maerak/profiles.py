"""Profiles and paths: the one place that says where each pipeline file lives."""
from __future__ import annotations

import os
import random
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maerak.files import load_yaml

ROOT = Path(__file__).resolve().parent.parent
PROFILES_FILE = ROOT / "profiles.yml"
SPLITS = ("train", "dev", "test")
RAW_DATA = Path("data/raw")  # where users put the official files; `auto_profile` looks there
SOURCES_FILE = Path("preprocessing/sources.yml")  # a profile's data sources unless it names its own
STAGE_FILES = {1: "stage1_qlora.yml", 2: "stage2_full.yml"}  # per profile, in its axolotl_configs folder


def is_local_model(value: str, root: Path = ROOT) -> bool:
    """A base_model that names a folder (models/..., an absolute path, or one that exists), not a hub id."""
    return value.startswith("models/") or Path(value).is_absolute() or (root / value).exists()


@dataclass(frozen=True)
class Profile:
    name: str
    settings: dict[str, Any]
    root: Path = ROOT

    def path(self, key: str) -> Path:
        return self.root / self.settings[key]

    def stage_config(self, stage: int) -> dict[str, Any]:
        """The Axolotl YAML of a stage, as Axolotl runs it (axolotl_configs/<profile>/)."""
        return load_yaml(self.axolotl_config(stage), "Axolotl config")

    # The base model and the seed are written once, in the stage-1 YAML (Axolotl reads them there).
    @property
    def base_model_name(self) -> str:
        """Stage 1's base_model; "" for a profile with no stage configs (a data-only profile: no model)."""
        if "axolotl_configs" not in self.settings:
            return ""
        return str(self.stage_config(1)["base_model"])

    @property
    def base_model_is_local(self) -> bool:
        return is_local_model(self.base_model_name, self.root)

    @property
    def base_model(self) -> str:
        """A local folder as an absolute path; a hub id (competition) as it is written."""
        value = self.base_model_name  # read once: each read parses the stage-1 YAML
        return str(self.root / value) if is_local_model(value, self.root) else value

    @property
    def seed(self) -> int:
        return int(self.stage_config(1).get("seed", 42))

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
        from maerak.modes import MODES

        mode = self.scoring.get("mode", "letters")
        if mode not in MODES:
            raise SystemExit(f"{PROFILES_FILE}: {self.name}: scoring.mode: {mode!r} is not one of {', '.join(MODES)}")
        return mode

    @property
    def vllm(self) -> dict[str, Any]:
        """vLLM engine settings for scoring and distillation (e.g. tensor_parallel_size)."""
        return dict(self.settings.get("vllm") or {})

    @property
    def sources(self) -> Path:
        return self.path("sources") if "sources" in self.settings else self.root / SOURCES_FILE

    def split_file(self, split: str) -> Path:
        return self.path("data_dir") / f"{split}.json"

    def axolotl_config(self, stage: int) -> Path:
        return self.path("axolotl_configs") / STAGE_FILES[stage]

    def stage_data(self, stage: int) -> Path:
        return self.prepared / f"stage{stage}.jsonl"

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
        return self.stage1_dir / "merged"  # where Axolotl's merge-lora writes: <stage-1 output_dir>/merged

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
    return load_yaml(path, "profiles file")


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
    raw = root / RAW_DATA
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
