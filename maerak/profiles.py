"""Profiles and paths: the one place that says where each pipeline file lives.

profiles.yml is read into typed settings (`ProfileSettings`, checked by maerak/typed.py: an
unknown key, a wrong type or a bad value is one line naming the file, the profile and the key).
The stage paths (each stage's output_dir, its training file, Axolotl's dataset cache, stage 2's
base model) are stated once, in the stage YAMLs Axolotl runs as they are; `Profile` reads them
from there (`StagePaths`) and checks only that they fit together.
"""
from __future__ import annotations

import copy
import os
import random
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maerak.errors import ConfigError
from maerak.files import load_yaml
from maerak.stage_config import check_stage_values
from maerak.typed import number, parse

ROOT = Path(__file__).resolve().parent.parent
PROFILES_FILE = ROOT / "profiles.yml"
SPLITS = ("train", "dev", "test")
RAW_DATA = Path("data/raw")  # where users put the official files; `auto_profile` looks there
STAGE_FILES = {1: "stage1_qlora.yml", 2: "stage2_full.yml", 3: "stage3_orpo.yml"}  # per profile, in its axolotl_configs folder
PREFERENCE_STAGE = 3  # ORPO on the stage-2 model, run when the profile says `preference: true`
MERGED = "merged"  # Axolotl's merge-lora writes <stage-1 output_dir>/merged (axolotl/cli/merge_lora.py)


def is_local_model(value: str, root: Path = ROOT) -> bool:
    """A base_model that names a folder (models/..., an absolute path, or one that exists), not a hub id."""
    return value.startswith("models/") or Path(value).is_absolute() or (root / value).exists()


@dataclass(frozen=True)
class Scoring:
    batch_size: int = number(4, least=1)
    max_length: int = number(1024, least=1)  # tokens
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"  # auto: measured on the CPU (maerak/cpu_dtype.py)
    tta: str = "none"     # an option-order set (maerak.prompt.ORDER_SETS)
    mode: str = "letters"  # letters | options (maerak.modes.MODES): the scorer and the training rows follow it

    def __post_init__(self) -> None:
        from maerak.modes import MODES
        from maerak.prompt import ORDER_SETS

        if self.mode not in MODES:
            raise ValueError(f"mode: {self.mode!r} is not one of {', '.join(MODES)}")
        if self.tta not in ORDER_SETS:
            raise ValueError(f"tta: {self.tta!r} is not one of {', '.join(ORDER_SETS)}")


@dataclass(frozen=True)
class ProfileSettings:
    """One profile of profiles.yml. Hyperparameters, the base model and the seed are not here:
    they live in the stage YAMLs (axolotl_configs/<profile>/)."""

    description: str = ""
    data_dir: str | None = None          # the official-format train/dev/test files
    axolotl_configs: str | None = None   # None: a data-only profile (prepare, no training)
    sources: str = "preprocessing/sources.yml"
    needs_gpu: bool = False
    offline: bool = False                # no hub access at run time
    out: str | None = None               # None: outputs/<profile>
    preference: bool = False             # true: stage 3 (ORPO) after stage 2, and submit scores its checkpoint
    scoring: Scoring = Scoring()
    vllm: dict[str, Any] = field(default_factory=dict)  # engine settings for --backend vllm and the vLLM teacher


@dataclass(frozen=True)
class StagePaths:
    """A stage's paths as its YAML states them, resolved against the repository root."""

    config: Path
    output_dir: Path
    data: Path                 # datasets[0].path: the file prepare writes
    dataset_prepared_path: Path
    base_model: str            # as written (a hub id for the competition's stage 1)


# A parsed stage YAML per (path, size, mtime): properties below read the YAMLs many times a run.
_YAML_CACHE: dict[tuple[str, int, int], dict[str, Any]] = {}


def read_stage_yaml(path: Path) -> dict[str, Any]:
    try:
        st = path.stat()
    except OSError:
        return load_yaml(path, "Axolotl config")  # raises the one-line "no such" error
    key = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)  # as maerak/fingerprint.py keys a file
    if key not in _YAML_CACHE:
        cfg = load_yaml(path, "Axolotl config")
        check_stage_values(cfg, path)  # the values the project reads or Axolotl needs, before any run
        _YAML_CACHE[key] = cfg
    return copy.deepcopy(_YAML_CACHE[key])


@dataclass(frozen=True)
class Profile:
    name: str
    settings: dict[str, Any]   # what profiles.yml says for this profile (checked into `config`)
    root: Path = ROOT
    file: str = "profiles.yml"  # named in messages about the settings
    config: ProfileSettings = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "config", parse(ProfileSettings, self.settings, self.file, self.name))

    def path(self, key: str) -> Path:
        value = getattr(self.config, key)
        if value is None:
            raise ConfigError(f"{self.file}: {self.name}.{key}: not set")
        return self.root / value

    @property
    def has_stage_configs(self) -> bool:
        return self.config.axolotl_configs is not None

    def stage_config(self, stage: int) -> dict[str, Any]:
        """The Axolotl YAML of a stage, as Axolotl runs it (axolotl_configs/<profile>/)."""
        return read_stage_yaml(self.axolotl_config(stage))

    # The base model and the seed are written once, in the stage-1 YAML (Axolotl reads them there).
    @property
    def base_model_name(self) -> str:
        """Stage 1's base_model; "" for a profile with no stage configs (a data-only profile: no model)."""
        if not self.has_stage_configs:
            return ""
        return str(self.stage_config(1)["base_model"])  # present: checked by read_stage_yaml

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
        if self.config.offline:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
            os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    @property
    def scoring(self) -> dict[str, Any]:
        """The scoring settings with every default filled in (the manifest records them)."""
        s = self.config.scoring
        return {"batch_size": s.batch_size, "max_length": s.max_length, "dtype": s.dtype, "tta": s.tta, "mode": s.mode}

    @property
    def scoring_mode(self) -> str:
        """letters (the answer letter's logit) or options (each option's log-likelihood): the
        scorer and the training rows prepare writes follow it."""
        return self.config.scoring.mode

    @property
    def vllm(self) -> dict[str, Any]:
        """vLLM engine settings for scoring and distillation (e.g. tensor_parallel_size)."""
        return dict(self.config.vllm)

    @property
    def sources(self) -> Path:
        return self.path("sources")

    def split_file(self, split: str) -> Path:
        return self.path("data_dir") / f"{split}.json"

    def axolotl_config(self, stage: int) -> Path:
        if stage not in STAGE_FILES:
            raise ConfigError(f"unknown stage {stage!r}; expected 1, 2 or 3")
        return self.path("axolotl_configs") / STAGE_FILES[stage]

    def stage_paths(self, stage: int) -> StagePaths:
        """The paths stage `stage`'s YAML states, checked to fit the pipeline: one dataset, every
        output under the profile's `out` (so stamps, --force and the manifest see it), and stage 2
        training the model stage 1's merge writes. A misfit is one line naming file and key."""
        config = self.axolotl_config(stage)
        cfg = self.stage_config(stage)

        def value(key: str, got: Any) -> str:
            if not isinstance(got, str) or not got:
                raise ConfigError(f"{config}: {key}: {got!r}: expected a path")
            return got

        datasets = cfg.get("datasets")
        if not isinstance(datasets, list) or len(datasets) != 1 or not isinstance(datasets[0], dict):
            raise ConfigError(f"{config}: datasets: expected exactly one entry (prepare writes one file per stage)")
        paths = StagePaths(config=config,
                           output_dir=self.root / value("output_dir", cfg.get("output_dir")),
                           data=self.root / value("datasets[0].path", datasets[0].get("path")),
                           dataset_prepared_path=self.root / value("dataset_prepared_path", cfg.get("dataset_prepared_path")),
                           base_model=value("base_model", cfg.get("base_model")))
        out = self.out.resolve()
        for key in ("output_dir", "data", "dataset_prepared_path"):
            path = getattr(paths, key)
            if out not in path.resolve().parents:
                shown = "datasets[0].path" if key == "data" else key
                raise ConfigError(f"{config}: {shown}: {str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)!r}"
                                  f" is outside {self._shown(self.out)}/, where everything a run of profile "
                                  f"{self.name!r} writes lives")
        if stage == 2:
            merged = self.stage_paths(1).output_dir / MERGED
            if (self.root / paths.base_model).resolve() != merged.resolve():
                raise ConfigError(f"{config}: base_model: {paths.base_model!r}, but stage 1's merge writes "
                                  f"{self._shown(merged)} (its output_dir + /{MERGED})")
        if stage == PREFERENCE_STAGE and (self.root / paths.base_model).resolve() != self.stage2_dir.resolve():
            raise ConfigError(f"{config}: base_model: {paths.base_model!r}, but stage 2 writes {self._shown(self.stage2_dir)} "
                              "(its output_dir): the preference stage starts from stage 2's model")
        if "tokenizer_config" in cfg and str(cfg["tokenizer_config"]) != paths.base_model:
            raise ConfigError(f"{config}: tokenizer_config: {cfg['tokenizer_config']!r}: the tokenizer comes with the model "
                              f"being trained (base_model {paths.base_model!r}); drop the key or make them equal")
        return paths

    def _shown(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def stage_data(self, stage: int) -> Path:
        """The training file of a stage (its YAML's datasets[0].path); a data-only profile, with
        no stage YAMLs, keeps its files in `prepared/` (nothing trains on them)."""
        if not self.has_stage_configs:
            return self.prepared / f"stage{stage}.jsonl"
        return self.stage_paths(stage).data

    # Everything a run writes lives under outputs/<profile>/ (the preflight moves it with `out`).
    @property
    def out(self) -> Path:
        return self.root / (self.config.out or f"outputs/{self.name}")

    @property
    def prepared(self) -> Path:
        """prepare's report (the stage files go where the stage YAMLs read them)."""
        return self.out / "prepared"

    @property
    def stage1_dir(self) -> Path:
        return self.stage_paths(1).output_dir

    @property
    def merged_dir(self) -> Path:
        return self.stage1_dir / MERGED

    @property
    def stage2_dir(self) -> Path:
        return self.stage_paths(2).output_dir

    @property
    def stage3_dir(self) -> Path:
        return self.stage_paths(PREFERENCE_STAGE).output_dir

    @property
    def training_stages(self) -> tuple[int, ...]:
        """The Axolotl stages this profile runs, in order: 1, 2, and 3 (ORPO) with `preference: true`."""
        return (1, 2, PREFERENCE_STAGE) if self.config.preference else (1, 2)

    @property
    def final_stage(self) -> int:
        return self.training_stages[-1]

    @property
    def final_dir(self) -> Path:
        """The checkpoint submit scores: stage 3's with `preference: true`, else stage 2's."""
        return self.stage3_dir if self.config.preference else self.stage2_dir

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


def probs_path(output: Path) -> Path:
    """Where submit writes the per-item probabilities of a predictions file `output`."""
    return output.with_name(output.stem + ".probs.json")


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, dict[str, Any]]:
    """profiles.yml as written, every profile checked (a typo in one shows whichever runs)."""
    profiles = load_yaml(path, "profiles file")
    for name, settings in profiles.items():
        parse(ProfileSettings, settings, path.name, str(name))
    return profiles


def get_profile(name: str, root: Path = ROOT) -> Profile:
    profiles = load_profiles(root / "profiles.yml")
    if name not in profiles:
        raise ConfigError(f"unknown profile {name!r}; profiles.yml has: {', '.join(profiles)}")
    return Profile(name=name, settings=profiles[name], root=root)


def has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return shutil.which("nvidia-smi") is not None


DEEPSPEED_DEFAULT = "axolotl_configs/deepspeed/zero3.json"  # what --gpus N > 1 adds when stage 2 names none


def gpu_needs(profile: Profile, stages: tuple[int, ...] | None = None, gpus: int = 1
              ) -> tuple[list[str], list[str], dict[str, dict[str, Any]]]:
    """(steps, the steps in bf16, DeepSpeed configs by file) of a GPU run of `stages` (default: the
    profile's), read from the stage YAMLs and the scoring settings (pure but for reading them)."""
    stages = stages if stages is not None else profile.training_stages
    steps = [f"stage{n}" for n in stages] + (["merge"] if 1 in stages else [])
    bf16 = [f"stage{n}" for n in stages if profile.stage_config(n).get("bf16") is True]
    if stages == profile.training_stages:
        steps.append("submit")
        if profile.config.scoring.dtype == "bfloat16":
            bf16.append("submit")
    ds: dict[str, dict[str, Any]] = {}
    for n in stages:  # a stage's own `deepspeed:` key (one GPU too), or what --gpus N > 1 adds to stage 2
        name = profile.stage_config(n).get("deepspeed") or (DEEPSPEED_DEFAULT if gpus > 1 and n == 2 else None)
        if name:
            path = Path(name) if Path(name).is_absolute() else profile.root / name
            ds[str(name)] = load_yaml(path, "DeepSpeed config")
    return steps, bf16, ds


def nvidia_smi_sees_gpu() -> bool:
    from maerak import gpu

    return gpu.nvidia_smi_sees_gpu()


def torch_cuda_problem() -> str:
    """Why torch cannot use the GPU nvidia-smi sees (torch installed: has_gpu() said False)."""
    from maerak import gpu

    try:
        import torch
    except ImportError:
        return "nvidia-smi sees a GPU but torch is not installed: `make setup`"
    err = ""
    try:
        torch.cuda.init()
    except Exception as exc:  # noqa: BLE001 - the message is what the user needs
        err = str(exc)
    return gpu.torch_cuda_problem(torch.__version__, torch.version.cuda, err)


def require_gpu(profile: Profile, stages: tuple[int, ...] | None = None, gpus: int = 1) -> None:
    """A profile with `needs_gpu: true` stops here, at the start, on a machine that cannot run it,
    rather than minutes later inside a library (`make preflight` is the CPU way to run its configs):
    no CUDA; then the GPU's architecture against torch's and bitsandbytes' builds, bf16, free
    memory against maerak/gpu_memory.yml, and a CPU-offload DeepSpeed config without a CUDA toolkit."""
    if not profile.config.needs_gpu:
        return
    if not has_gpu():
        raise ConfigError(f"profile {profile.name!r} needs a CUDA GPU ({profile.file}: needs_gpu: true) and torch sees "
                          f"none; on this machine `make preflight` runs its configs end to end on a CPU")
    from maerak import gpu

    steps, bf16, ds = gpu_needs(profile, stages, gpus)
    found = gpu.problems(gpu.probe(), steps, bf16, gpu.memory_needs(), ds, gpus)
    if found:
        # One line per problem; the first is the error, the others follow it on the same line.
        raise ConfigError(f"profile {profile.name!r} cannot run on this GPU: " + " | ".join(found))


def auto_profile(root: Path = ROOT) -> tuple[str, str]:
    """The profile `reproduce` runs when none is named, and why."""
    raw = root / RAW_DATA
    present = [s for s in SPLITS if (raw / f"{s}.json").exists()]
    if present and len(present) < len(SPLITS):  # a partial copy: say which file is missing
        missing = ", ".join(f"{s}.json" for s in SPLITS if s not in present)
        return "sample", (f"the official data in {raw.relative_to(root)}/ is incomplete: {missing} missing "
                          f"(found {', '.join(s + '.json' for s in present)})")
    if len(present) < len(SPLITS):
        return "sample", f"no official data in {raw.relative_to(root)}/ (need {', '.join(s + '.json' for s in SPLITS)})"
    if not has_gpu():
        if nvidia_smi_sees_gpu():  # a GPU torch cannot use: say why, not run the CPU profile in its place
            raise ConfigError(torch_cuda_problem())
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
