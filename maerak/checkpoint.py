"""Is a checkpoint directory complete and readable? Checked before hours of work load it.

Reads only headers (config.json, each safetensors header, the shard index), so it
costs milliseconds even for a 9B model, and names the broken file with what to do.
"""
from __future__ import annotations

import json
from pathlib import Path

INDEX = "model.safetensors.index.json"


def checkpoint_problems(model_dir: str | Path, remedy: str = "") -> list[str]:
    """One line per problem: missing config or weights, a truncated/corrupt safetensors file,
    a shard named by the index but absent. Empty when the checkpoint looks complete."""
    from safetensors import SafetensorError, safe_open

    d = Path(model_dir)
    hint = f"; {remedy}" if remedy else ""
    if not d.is_dir():
        return [f"{d}: no checkpoint directory{hint}"]
    problems = []
    config = d / "config.json"
    try:
        if not isinstance(json.loads(config.read_text(encoding="utf-8")), dict):
            problems.append(f"{config}: not a JSON object{hint}")
    except FileNotFoundError:
        problems.append(f"{config}: missing (no checkpoint here){hint}")
    except (OSError, ValueError) as exc:
        problems.append(f"{config}: unreadable ({type(exc).__name__}){hint}")
    weights = sorted(d.glob("*.safetensors"))
    index = d / INDEX
    if index.is_file():
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8"))["weight_map"].values())
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            problems.append(f"{index}: unreadable shard index{hint}")
            shards = set()
        problems += [f"{d / s}: shard named in {INDEX} is missing{hint}" for s in sorted(shards)
                     if not (d / s).is_file()]
    if not weights and not any(d.glob("pytorch_model*.bin")):
        problems.append(f"{d}: no model weights (*.safetensors){hint}")
    for w in weights:
        try:
            with safe_open(str(w), framework="pt"):
                pass
        except (SafetensorError, OSError) as exc:
            problems.append(f"{w}: truncated or corrupt weights ({str(exc)[:120]}){hint}")
    return problems
