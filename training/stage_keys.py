"""Stage YAML keys checked against what the pinned Axolotl accepts, before anything runs.

Axolotl's config schema (`axolotl.utils.schemas.config.AxolotlConfigWCapabilities`, pydantic)
ignores a key it does not know: `learning_rat: 5` trains at the default learning rate and exits
0. The keys it knows are that model's fields and their aliases, plus the fields of each plugin's
own input model (`BasePlugin.get_input_args`, merged in by `axolotl.integrations.config.merge_input_args`
when the YAML names `plugins:`); each `datasets:` entry is validated the same way against the
dataset model Axolotl builds for it (`validate_config` in axolotl/utils/config/__init__.py).
"""
from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

from maerak.errors import ConfigError


def field_names(model: type) -> set[str]:
    """A pydantic model's field names with every alias it accepts."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        names.add(name)
        for alias in (field.alias, field.validation_alias):
            if isinstance(alias, str):
                names.add(alias)
            elif alias is not None:  # AliasChoices / AliasPath
                names.update(c for c in getattr(alias, "choices", []) if isinstance(c, str))
    return names


@cache
def _top_keys(plugins: tuple[str, ...]) -> frozenset[str]:
    from axolotl.utils.schemas.config import AxolotlConfigWCapabilities

    keys = field_names(AxolotlConfigWCapabilities)
    for plugin in plugins:
        module, _, cls = plugin.rpartition(".")
        args = getattr(importlib.import_module(module), cls)().get_input_args()
        if args:
            arg_module, _, arg_cls = args.rpartition(".")
            keys |= field_names(getattr(importlib.import_module(arg_module), arg_cls))
    return frozenset(keys)


def dataset_model(rl: Any) -> type:
    """The model Axolotl validates a `datasets:` entry with, for this `rl:` value."""
    from axolotl.utils.schemas.datasets import DPODataset, KTODataset, SFTDataset

    return DPODataset if rl in ("dpo", "ipo", "simpo") else KTODataset if rl == "kto" else SFTDataset


def unknown_keys(cfg: dict[str, Any]) -> list[str]:
    """Keys of a stage config the pinned Axolotl does not accept (`datasets[i].key` for a dataset's)."""
    plugins = tuple(str(p) for p in cfg.get("plugins") or [])
    known = _top_keys(plugins)
    bad = [k for k in cfg if k not in known]
    ds_known = field_names(dataset_model(cfg.get("rl")))
    for i, ds in enumerate(cfg.get("datasets") or []):
        if isinstance(ds, dict):
            bad += [f"datasets[{i}].{k}" for k in ds if k not in ds_known]
    return bad


def suggestion(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key.rpartition(".")[2], list(known), n=1)
    return f"; did you mean `{close[0]}`?" if close else ""


def check_keys(cfg: dict[str, Any], config: str | Path) -> None:
    """Raise ConfigError, one line naming the file and the first unknown key, when `cfg` has one."""
    bad = unknown_keys(cfg)
    if bad:
        from importlib.metadata import version

        known = _top_keys(tuple(str(p) for p in cfg.get("plugins") or [])) if "." not in bad[0] \
            else field_names(dataset_model(cfg.get("rl")))
        more = f" (and {len(bad) - 1} more: {', '.join(bad[1:])})" if len(bad) > 1 else ""
        raise ConfigError(f"{config}: {bad[0]}: not a key Axolotl {version('axolotl')} accepts (it would be "
                          f"ignored){suggestion(bad[0], known)}{more}")
