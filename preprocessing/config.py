"""The sources config (preprocessing/sources.yml, or the profile's `sources:`): read, merged with
its `profiles.<name>` section, and carried together with the path it was read from, so that
every message about it can name the file.

Shared by prepare, distill and magpie; it imports none of them (no import cycle).
"""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

from maerak.profiles import Profile
from maerak.schema import DataError, Problem


class SourcesConfig(dict):
    """The merged config as a plain dict (what the YAML says, and nothing else: its hash in the
    report covers only that), plus `path`, the file it was read from."""

    def __init__(self, data: dict, path: Path):
        super().__init__(data)
        self.path = path


def deep_merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (over or {}).items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(profile: Profile, path: str | Path | None = None) -> SourcesConfig:
    """`path` (relative to the repo root), else the profile's sources file (`Profile.sources`)."""
    path = Path(path) if path else profile.sources
    path = path if path.is_absolute() else profile.root / path
    if not path.is_file():
        raise SystemExit(f"{path}: -: file: no such sources config (see preprocessing/README.md)")
    with open(path, encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    return SourcesConfig(deep_merge(cfg, (cfg.get("profiles") or {}).get(profile.name, {})), path)


def placeholders(profile: Profile) -> dict[str, str]:
    return {"data_dir": str(profile.settings["data_dir"]), "out": str(profile.out), "base_model": profile.base_model}


def resolve(profile: Profile, value: str) -> Path:
    """A config path with its {data_dir}/{out}/{base_model} filled in, relative to the repo root."""
    p = Path(str(value).format(**placeholders(profile)))
    return p if p.is_absolute() else profile.root / p


def config_problem(cfg: SourcesConfig, field: str, message: str) -> DataError:
    """A DataError that names the config file and the field at fault."""
    return DataError([Problem(str(cfg.path), "-", field, message)])
