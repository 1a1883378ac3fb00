"""The competition configs carry the recipe's values (DEVELOPERS.md), stated once, here;
every other choice is a row of the deviation table in training/README.md, whose
"ours" column must be what the YAMLs say."""
from __future__ import annotations

import re

import pytest
import yaml

from maerak.profiles import ROOT

CONFIGS = ROOT / "axolotl_configs" / "competition"
STAGE_FILES = {1: "stage1_qlora.yml", 2: "stage2_full.yml"}

# The recipe, as published (DEVELOPERS.md). Stage 2 takes stage 1's lr/scheduler/warmup/decay.
_SHARED = {"learning_rate": 2e-5, "lr_scheduler": "cosine", "warmup_steps": 20, "weight_decay": 0.05, "sequence_len": 1024,
           "gradient_checkpointing": True}
RECIPE = {
    1: {**_SHARED, "base_model": "google/gemma-2-9b-it", "adapter": "qlora", "load_in_4bit": True, "lora_r": 16,
        "lora_alpha": 32, "lora_dropout": 0.05, "lora_target_linear": True, "num_epochs": 5, "micro_batch_size": 4,
        "gradient_accumulation_steps": 4, "optimizer": "adamw_bnb_8bit"},
    2: {**_SHARED, "micro_batch_size": 3, "gradient_accumulation_steps": 5, "sample_packing": True,
        "pad_to_sequence_len": True},
}


def _stage(n: int) -> dict:
    return yaml.safe_load((CONFIGS / STAGE_FILES[n]).read_text(encoding="utf-8"))


def _deviation_rows() -> list[dict[str, str]]:
    text = (ROOT / "training" / "README.md").read_text(encoding="utf-8")
    section = text.split("## The recipe and our deviations", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("stage", "---"):
            rows.append(dict(zip(("stage", "key", "recipe", "ours", "why"), cells)))
    return rows


@pytest.mark.parametrize("stage", [1, 2])
def test_competition_configs_use_every_recipe_value(stage):
    cfg = _stage(stage)
    wrong = {k: (want, cfg.get(k)) for k, want in RECIPE[stage].items()
             if not (cfg.get(k) == want or (isinstance(want, float) and float(cfg.get(k, "nan")) == want))}
    assert not wrong, f"{STAGE_FILES[stage]}: recipe value -> ours: {wrong}"
    assert "max_steps" not in cfg  # epochs, as the recipe, not a step budget
    assert [d["type"] for d in cfg["datasets"]] == ["alpaca"]
    assert stage == 1 or ("adapter" not in cfg and not cfg.get("load_in_4bit"))


def test_deviation_table_matches_the_configs():
    rows = _deviation_rows()
    assert len(rows) >= 6
    for row in rows:
        key = row["key"].strip("`")
        stages = [int(s) for s in re.findall(r"\d", row["stage"])]
        for stage in stages:
            cfg = _stage(stage)
            assert key not in RECIPE[stage], f"{key}: a recipe value is not a deviation"
            if row["ours"] == "not set":
                assert key not in cfg, f"stage {stage}: {key} is set but the table says not set"
            else:
                want = yaml.safe_load(row["ours"].strip("`"))
                assert cfg.get(key) == want, f"stage {stage}: {key} is {cfg.get(key)!r}, the table says {want!r}"


def test_softcapping_needs_eager_or_flash_attention():
    for stage in (1, 2):
        assert _stage(stage)["attn_implementation"] in ("eager", "flash_attention_2")
