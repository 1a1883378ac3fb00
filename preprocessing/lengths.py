"""Token lengths of the training rows, counted the way Axolotl counts them.

Axolotl's `alpaca` dataset type (AlpacaPromptTokenizingStrategy) tokenizes the wrapped
prompt with BOS, truncated to `sequence_len`, then appends the response with BOS
stripped and EOS added; with the default `excess_length_strategy: drop` it then drops
every row longer than `sequence_len`, logging only a count at INFO
(axolotl/utils/data/utils.py, utils/trainer.py:filter_sequences_by_length). So a row is
dropped exactly when its untruncated prompt + response + EOS length is over
`sequence_len`; prepare measures that length with Axolotl's own strategy and the
profile's tokenizer, and stops (or drops with a reason) before Axolotl can drop silently.

`sequence_len` and `excess_length_strategy` are read from the stage YAMLs
(axolotl_configs/<profile>/), never written here.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from maerak.profiles import Profile
from maerak.schema import DataError, Problem

UNBOUNDED = 1 << 30  # tokenizer max_length for the strategy: measure, never truncate


def stage_limits(profile: Profile, stages: Sequence[int] = (1, 2)) -> dict[int, dict]:
    """Per stage: sequence_len, the excess length strategy and the config file read."""
    out = {}
    for n in stages:
        path = profile.axolotl_config(n)
        cfg = profile.stage_config(n)
        if not isinstance(cfg.get("sequence_len"), int):
            raise DataError([Problem(str(path), "-", "sequence_len", "missing or not an integer (prepare checks row lengths against it)")])
        out[n] = {"sequence_len": cfg["sequence_len"], "excess_length_strategy": str(cfg.get("excess_length_strategy") or "drop"),
                  "config": str(path)}
    return out


def tokenizer_ref(profile: Profile, setting: str) -> str:
    """A directory (relative to the repository root) when one exists, else the text as
    given (a hub id, looked up in the local Hugging Face cache only)."""
    value = str(setting).format(data_dir=profile.settings.get("data_dir", ""), out=profile.out,
                                base_model=profile.base_model_name)
    local = Path(value) if Path(value).is_absolute() else profile.root / value
    return str(local) if value and local.exists() else value


def load_tokenizer(ref: str, download: bool = False):
    """(tokenizer, '') or (None, why): local files and the HF cache; with `download` (an online
    profile), a hub id not in the cache is fetched (the tokenizer files only: a few MB), since on
    a fresh machine prepare runs before training has downloaded anything."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(ref, local_files_only=True), ""
    except Exception as exc:  # transformers raises OSError, ValueError, HF hub errors...
        why = _why(exc)
    if not download:
        return None, why
    try:
        return AutoTokenizer.from_pretrained(ref), ""
    except Exception as exc:  # no network, a gated model without HF_TOKEN...
        return None, f"not in the cache ({why}), and fetching it failed: {_why(exc)}"


def _why(exc: Exception) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ''}"


def row_counter(tokenizer) -> Callable[[dict], int]:
    """Length of one alpaca row as Axolotl's alpaca strategy tokenizes it, untruncated."""
    from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
    from axolotl.prompters import AlpacaPrompter

    strategy = AlpacaPromptTokenizingStrategy(AlpacaPrompter("instruct"), tokenizer, False, UNBOUNDED)
    return lambda row: len(strategy.tokenize_prompt(row)["input_ids"])


def pair_counter(tokenizer) -> Callable[[dict], int]:
    """Length of one ORPO pair (prompt/chosen/rejected) as the ORPO stage's trainer tokenizes it
    (maerak.prompt.preference_ids: BOS + prompt, answer + EOS): its longer sequence."""
    from maerak.prompt import preference_ids

    def count(row: dict) -> int:
        ids = preference_ids(tokenizer, row["prompt"], row["chosen"], row["rejected"])
        return max(len(ids["chosen_input_ids"]), len(ids["rejected_input_ids"]))

    return count


def distribution(lengths: Sequence[int]) -> dict:
    """rows, min, mean, p50/p90/p99 (nearest rank) and max."""
    if not lengths:
        return {"rows": 0}
    a = np.asarray(lengths)
    pct = {f"p{q}": int(np.percentile(a, q, method="inverted_cdf")) for q in (50, 90, 99)}
    return {"rows": int(a.size), "min": int(a.min()), "mean": round(float(a.mean()), 1), **pct, "max": int(a.max())}
