"""The sources config (preprocessing/sources.yml, or the profile's `sources:`) as typed objects.

Read once through the shared YAML loader (`maerak.files.load_yaml`) and checked against the
dataclasses below (`maerak.typed`): each default is stated here, once; an unknown key, a wrong
type or a bad value is one line naming the file and the key. The file's `profiles.<name>`
table (the one place per-profile source settings live; see the comment there) is merged in
before the check, and a fault in it is named under `profiles.<name>.`.

Shared by prepare, distill and magpie; it imports none of them (no import cycle).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from maerak.errors import ConfigError, DataError
from maerak.files import load_yaml
from maerak.profiles import Profile
from maerak.schema import Problem
from maerak.typed import number, parse, plain

Kind = Literal["official", "items", "correction", "magpie"]
TASK_KINDS = ("official", "items")  # sources of task items (cleaned, deduped, checked against dev/test)
OverLength = Literal["stop", "drop"]
STAGES = (1, 2)


def _check_orders(**named: str) -> None:
    from maerak.prompt import ORDER_SETS

    for key, value in named.items():
        if value not in ORDER_SETS:
            raise ValueError(f"{key}: {value!r}: expected one of {', '.join(ORDER_SETS)}")


def _check_stages(stages: tuple[int, ...]) -> None:
    if not stages or any(s not in STAGES for s in stages):
        raise ValueError(f"stages: {list(stages)}: expected a non-empty list of {' and '.join(map(str, STAGES))}")


@dataclass(frozen=True)
class Source:
    name: str
    kind: Kind
    paths: tuple[str, ...]
    stages: tuple[int, ...]
    required: bool = False                      # no file found stops the run (else: skipped, and said)
    on_contamination: Literal["keep", "drop"] = "keep"
    over_length: OverLength | None = None       # None: lengths.over_length

    def __post_init__(self) -> None:
        _check_stages(self.stages)


@dataclass(frozen=True)
class Dedup:
    enabled: bool = True
    max_distance: int = number(5, least=0)  # bits, per part, of a 64-bit simhash


@dataclass(frozen=True)
class Augment:
    stage1_orders: str = "none"
    stage2_orders: str = "cyclic"

    def __post_init__(self) -> None:
        _check_orders(stage1_orders=self.stage1_orders, stage2_orders=self.stage2_orders)

    def orders(self, stage: int) -> str:
        return self.stage1_orders if stage == 1 else self.stage2_orders


@dataclass(frozen=True)
class CorrectionColumns:
    source: tuple[str, ...] = ("source", "original", "input", "err_sentence", "원문")
    corrected: tuple[str, ...] = ("corrected", "target", "output", "cor_sentence", "교정문")


@dataclass(frozen=True)
class Correction:
    instruction: str = "다음 문장의 맞춤법과 띄어쓰기를 바르게 고친 문장을 쓰세요."
    columns: CorrectionColumns = CorrectionColumns()


@dataclass(frozen=True)
class MagpieColumns:
    instruction: tuple[str, ...] = ("instruction", "query", "prompt")
    response: tuple[str, ...] = ("response", "output", "answer")


@dataclass(frozen=True)
class Magpie:
    max_rows: int | None = number(None, least=1)
    columns: MagpieColumns = MagpieColumns()


@dataclass(frozen=True)
class Lengths:
    tokenizer: str = "{base_model}"
    on_missing_tokenizer: Literal["skip", "stop"] = "skip"
    over_length: OverLength = "stop"  # a source's own over_length wins


@dataclass(frozen=True)
class Distill:
    enabled: bool = False
    teacher: str | None = "{base_model}"  # null: no teacher set (prepare goes on without rationale rows)
    stages: tuple[int, ...] = (2,)
    orders: str = "none"
    max_new_tokens: int = number(64, least=1)
    batch_size: int = number(4, least=1)
    max_chars: int = number(300, least=1)
    backend: Literal["auto", "transformers", "vllm"] = "auto"

    def __post_init__(self) -> None:
        _check_stages(self.stages)
        _check_orders(orders=self.orders)


@dataclass(frozen=True)
class MagpieGenerate:
    enabled: bool = False
    model: str = "{base_model}"
    count: int = number(8, least=1)
    max_instruction_tokens: int = number(48, least=1)
    max_response_tokens: int = number(96, least=1)
    temperature: float = number(1.0, above=0)  # sampling: 0 would divide the logits by zero
    seed: int = 42


@dataclass(frozen=True)
class SourcesConfig:
    """What prepare reads and does, for one profile (its `profiles.<name>` entry merged in), plus
    `path`, the file it was read from, so every message about it can name the file."""

    sources: tuple[Source, ...]
    eval_files: tuple[str, ...] = ()   # contamination checks only: never trained on
    dedup: Dedup = Dedup()
    augment: Augment = Augment()
    correction: Correction = Correction()
    magpie: Magpie = Magpie()
    lengths: Lengths = Lengths()
    distill: Distill = Distill()
    magpie_generate: MagpieGenerate = MagpieGenerate()
    profiles: dict[str, Any] = field(default_factory=dict)  # per-profile overrides, already applied
    path: Path = field(default=Path("sources.yml"), metadata={"in_file": False})

    def __post_init__(self) -> None:
        names = [s.name for s in self.sources]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup is not None:
            raise ValueError(f"sources: two sources are named {dup!r}")

    def source(self, name: str) -> Source:
        return next(s for s in self.sources if s.name == name)

    def over_length(self, source: Source) -> str:
        return source.over_length or self.lengths.over_length

    def digest_data(self) -> dict[str, Any]:
        """What the settings are, as plain data (for the report's hash): not where they were read."""
        data = plain(self)
        data.pop("path")
        data.pop("profiles")
        return data

    def with_settings(self, override: dict[str, Any]) -> SourcesConfig:
        """This config with `override` (a mapping shaped like the file) merged in and checked again."""
        return checked(deep_merge(self.digest_data(), override), self.path)


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def checked(data: dict[str, Any], path: Path) -> SourcesConfig:
    cfg = parse(SourcesConfig, {k: v for k, v in data.items() if k != "path"}, path)
    return dataclasses.replace(cfg, path=path)


def _has_key(data: Any, key: str) -> bool:
    for part in key.split("."):
        part = part.split("[")[0]
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def read_config(path: Path, profile: str) -> SourcesConfig:
    """The file at `path` for the profile named, checked. Every profile's entry in the file's
    `profiles:` table is checked too, so a typo there shows whichever profile runs."""
    raw = load_yaml(path, "sources config")
    table = raw.get("profiles") or {}
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: profiles: expected a mapping of profile name to settings")
    base = {k: v for k, v in raw.items() if k != "profiles"}
    cfg = checked(base, path)
    mine = cfg
    for name, over in table.items():
        if not isinstance(over, dict):
            raise ConfigError(f"{path}: profiles.{name}: expected a mapping of settings")
        if "profiles" in over or "sources" in over:
            raise ConfigError(f"{path}: profiles.{name}: {'profiles' if 'profiles' in over else 'sources'}: "
                              "cannot be set per profile (only the settings sections)")
        try:
            merged = checked(deep_merge(base, over), path)
        except ConfigError as exc:
            # Name the key where it was written: under profiles.<name> when the override holds it.
            text = str(exc)
            key = text[len(f"{path}: "):].split(": ", 1)[0]
            if _has_key(over, key):
                raise ConfigError(f"{path}: profiles.{name}.{text[len(f'{path}: '):]}") from None
            raise
        if name == profile:
            mine = merged
    return dataclasses.replace(mine, profiles=dict(table))


def load_config(profile: Profile, path: str | Path | None = None) -> SourcesConfig:
    """`path` (relative to the repo root), else the profile's sources file (`Profile.sources`)."""
    path = Path(path) if path else profile.sources
    path = path if path.is_absolute() else profile.root / path
    if not path.is_file():
        raise ConfigError(f"{path}: -: file: no such sources config (see preprocessing/README.md)")
    return read_config(path, profile.name)


def placeholders(profile: Profile) -> dict[str, str]:
    return {"data_dir": profile.config.data_dir or "", "out": str(profile.out), "base_model": profile.base_model}


def resolve(profile: Profile, value: str) -> Path:
    """A config path with its {data_dir}/{out}/{base_model} filled in, relative to the repo root."""
    p = Path(str(value).format(**placeholders(profile)))
    return p if p.is_absolute() else profile.root / p


def config_problem(cfg: SourcesConfig, field: str, message: str) -> DataError:
    """A DataError that names the config file and the field at fault."""
    return DataError([Problem(str(cfg.path), "-", field, message)])
