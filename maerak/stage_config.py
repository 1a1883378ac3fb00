"""The values of a stage YAML that the project reads or a run needs, checked where the YAML is read
(maerak/profiles.read_stage_yaml), before Axolotl starts.

A bad value otherwise reaches Axolotl and ends tens of lines later (`learning_rate: fast`: a
pydantic trace; `micro_batch_size: -2`: a crash in the data loader; `sequence_len: -768`: one
"over sequence_len -768" line per row). Which KEYS a stage YAML may hold is Axolotl's schema
(checked elsewhere); this module says only what each known value must be: one ConfigError line
naming the file and the key.
"""
from __future__ import annotations

import math
from typing import Any

from maerak.errors import ConfigError
from maerak.schema import show_value

# key -> (kind, least, most): "int" an integer, "number" an int or float (a YAML 1.1 "2e-5"
# string too: PyYAML reads exponents without a dot as text, and Axolotl's pydantic accepts it)
BOUNDS: dict[str, tuple[str, float | None, float | None]] = {
    "learning_rate": ("number", 0.0, None),   # > 0, see _check
    "micro_batch_size": ("int", 1, None),
    "gradient_accumulation_steps": ("int", 1, None),
    "eval_batch_size": ("int", 1, None),
    "sequence_len": ("int", 1, None),
    "num_epochs": ("number", 0.0, None),      # > 0
    "max_steps": ("int", 1, None),
    "warmup_steps": ("int", 0, None),
    "warmup_ratio": ("number", 0, 1),
    "save_steps": ("number", 0.0, None),      # > 0 (a fraction of an epoch or a step count)
    "lora_r": ("int", 1, None),
    "lora_alpha": ("number", 0.0, None),      # > 0
    "lora_dropout": ("number", 0, 1),
    "weight_decay": ("number", 0, None),
    "max_grad_norm": ("number", 0, None),
    "val_set_size": ("number", 0, None),
    "seed": ("int", None, None),
}
POSITIVE = {"learning_rate", "num_epochs", "save_steps", "lora_alpha"}  # strictly above their `least`


def _as_number(value: Any, kind: str) -> float | int | None:
    if isinstance(value, bool):
        return None
    if kind == "int":
        return value if isinstance(value, int) else None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def check_stage_values(cfg: dict[str, Any], file: object) -> None:
    """Raise ConfigError for the first value of `cfg` that cannot work: base_model missing or not
    text, a number that is not one, not finite, or out of its range."""
    base = cfg.get("base_model")
    if base is None:
        raise ConfigError(f"{file}: base_model: missing (required: the model this stage trains)")
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{file}: base_model: {show_value(base)}: expected a model folder or hub id")
    for key, (kind, least, most) in BOUNDS.items():
        if key not in cfg or cfg[key] is None:
            continue
        value = _as_number(cfg[key], kind)
        want = "an integer" if kind == "int" else "a number"
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            raise ConfigError(f"{file}: {key}: {show_value(cfg[key])}: expected {want}")
        if least is not None and (value <= least if key in POSITIVE else value < least):
            bound = f"more than {least:g}" if key in POSITIVE else f"{least:g} or more"
            raise ConfigError(f"{file}: {key}: {show_value(cfg[key])}: expected {bound}")
        if most is not None and value > most:
            raise ConfigError(f"{file}: {key}: {show_value(cfg[key])}: expected at most {most:g}")
