"""The stage configs' values, stated once, here: the recipe's values in the competition configs
(DEVELOPERS.md) and what every profile's pipeline relies on, one table. Every other competition
choice is a row of the deviation table in training/README.md, whose "ours" column must be what
the YAMLs say."""
from __future__ import annotations

import re
from functools import cache

import pytest
import yaml

from maerak.profiles import ROOT

STAGE_FILES = {1: "stage1_qlora.yml", 2: "stage2_full.yml", 3: "stage3_orpo.yml"}

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

# Expected values other than a plain YAML value (compared with ==; a bool must be that bool, a float
# that number), and a set: one of its members.
NOT_SET, IS_SET, FALSE_OR_NOT_SET = "<not set>", "<set>", "<false or not set>"

# (profile, stage, key) -> expected. `datasets[].type` is the list of the datasets' types.
EXPECTED = {
    **{("competition", stage, key): want for stage, values in RECIPE.items() for key, want in values.items()},
    **{(profile, stage, key): want for profile in ("sample", "competition") for stage in (1, 2) for key, want in {
        "datasets[].type": ["alpaca"],  # the rows preprocessing writes
        "seed": IS_SET, "output_dir": IS_SET,
    }.items()},
    **{(profile, 1, key): want for profile in ("sample", "competition") for key, want in {
        "adapter": "qlora", "load_in_4bit": True,
        # W + alpha/r * B A on the exact base weights, not Axolotl's NF4 round trip (training/README.md)
        "merge_method": "legacy",
    }.items()},
    **{(profile, 2, "adapter"): NOT_SET for profile in ("sample", "competition")},  # stage 2 is a full fine-tune
    # The recipe counts epochs, not a step budget; stage 2 trains the full model, unquantized.
    ("competition", 1, "max_steps"): NOT_SET,
    ("competition", 2, "max_steps"): NOT_SET,
    ("competition", 2, "load_in_4bit"): FALSE_OR_NOT_SET,
    # Gemma-2 soft-caps attention logits: SDPA drops the cap.
    ("competition", 1, "attn_implementation"): {"eager", "flash_attention_2"},
    ("competition", 2, "attn_implementation"): {"eager", "flash_attention_2"},
    # CPU: Axolotl's fused LoRA kernels call CUDA streams; fp32, deterministic across CPUs.
    ("sample", 1, "lora_qkv_kernel"): False,
    ("sample", 1, "lora_o_kernel"): False,
    ("sample", 1, "lora_mlp_kernel"): False,
    ("sample", 1, "bf16"): FALSE_OR_NOT_SET,
    # Stage 3 (ORPO, profiles with preference: true; not in the recipe): Axolotl's ORPO with our trainer
    # (training/orpo_trainer.py: its own completion-only logits), no packing (Axolotl refuses it with `rl:`),
    # a full fine-tune, epochs on the GPU.
    **{(profile, 3, key): want for profile in ("sample", "official-cpu", "competition") for key, want in {
        "rl": "orpo", "orpo_alpha": IS_SET, "trainer_cls": "training.orpo_trainer.AnswerORPOTrainer",
        "sample_packing": FALSE_OR_NOT_SET, "adapter": NOT_SET, "seed": IS_SET,
    }.items()},
    ("competition", 3, "max_steps"): NOT_SET,
    # Axolotl turns its Triton LoRA kernels on for a (Q)LoRA on one GPU when none is set; their GEGLU
    # is erf-GELU, Gemma-2's is gelu_pytorch_tanh: every key stated, off.
    **{("competition", 1, f"lora_{k}_kernel"): False for k in ("qkv", "o", "mlp", "embedding")},
    # ORPO keeps its updates on bf16 weights with torchao's stochastic rounding (bench/bf16_updates.py).
    ("competition", 3, "optimizer"): "adamw_torch_8bit",
    ("competition", 3, "optim_args"): {"bf16_stochastic_round": True},
    ("competition", 3, "attn_implementation"): {"eager", "flash_attention_2"},
}


@cache
def _config(profile: str, stage: int) -> dict:
    return yaml.safe_load((ROOT / "axolotl_configs" / profile / STAGE_FILES[stage]).read_text(encoding="utf-8"))


def _stage(n: int) -> dict:
    return _config("competition", n)


def _holds(cfg: dict, key: str, want) -> bool:
    if want == NOT_SET:
        return key not in cfg
    if want == IS_SET:
        return key in cfg
    if want == FALSE_OR_NOT_SET:
        return not cfg.get(key)
    outer, _, inner = key.partition("[].")
    if outer not in cfg:
        return False
    got = [d[inner] for d in cfg[outer]] if inner else cfg[outer]
    if isinstance(want, set):
        return got in want
    if isinstance(want, bool):
        return got is want
    if isinstance(want, float):
        return isinstance(got, (int, float, str)) and not isinstance(got, bool) and float(got) == want
    return got == want


def _deviation_rows() -> list[dict[str, str]]:
    text = (ROOT / "training" / "README.md").read_text(encoding="utf-8")
    section = text.split("## The recipe and our deviations", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[0] not in ("stage", "---"):
            rows.append(dict(zip(("stage", "key", "recipe", "ours", "why"), cells)))
    return rows


@pytest.mark.parametrize("profile,stage,key", sorted(EXPECTED), ids=lambda v: str(v))
def test_stage_config_value(profile, stage, key):
    want = EXPECTED[profile, stage, key]
    cfg = _config(profile, stage)
    assert _holds(cfg, key, want), f"{profile}/{STAGE_FILES[stage]}: {key} is {cfg.get(key, NOT_SET)!r}, expected {want!r}"


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
