"""The stage-1 merge is exact: Axolotl merges the LoRA into the bf16 base, not into an NF4 round trip of it.

A tiny random Gemma-2 (bf16) and a LoRA adapter with random A and B over every
linear layer (what `lora_target_linear` trains) are merged by `./run.sh merge`
with the competition profile's own stage-1 config. Tensors without LoRA must be
bit-identical to the base; each LoRA'd weight must be W + (alpha/r)·B·A within
bf16 rounding. Axolotl's default merge (memory_efficient) fails both: it
NF4-round-trips every 2-D base tensor, the tied embeddings included.
"""
from __future__ import annotations

import pytest
import yaml

from maerak.profiles import Profile, get_profile
from training import axolotl_run as ar

ARCH = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 32,
        "max_position_embeddings": 256}
R, ALPHA = 16, 32


def _tensors(folder):
    from safetensors.torch import load_file

    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _adapter(base_dir, out_dir):
    """A LoRA over all linear layers with random A and B (PEFT's own init would make B = 0)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    cfg = LoraConfig(r=R, lora_alpha=ALPHA, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False,
                     task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn_like(p) * 0.05)
    peft_model.save_pretrained(out_dir)
    return _tensors(out_dir)


@pytest.mark.parametrize("profile_name", ["competition", "sample"])
def test_stage1_merge_is_base_plus_scaled_lora(tmp_path, profile_name):
    import torch

    from maerak.tiny_model import build_gemma2
    from tests.conftest import build_tiny_tokenizer, write_stage_configs

    tokenizer = build_tiny_tokenizer()
    base_dir = tmp_path / "base"
    build_gemma2(tokenizer, ARCH, dtype="bfloat16").save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)

    real = get_profile(profile_name)
    stage1 = yaml.safe_load(real.axolotl_config(1).read_text(encoding="utf-8"))
    assert stage1["merge_method"] == "legacy"
    settings = {**real.settings, "axolotl_configs": "axolotl_configs", "offline": True}
    profile = Profile(name=profile_name, settings=settings, root=tmp_path)
    write_stage_configs(profile, stage1, None, base_model=base_dir)
    lora = _adapter(base_dir, profile.stage1_dir)

    ar.merge(profile)
    base, merged = _tensors(base_dir), _tensors(profile.merged_dir)
    assert set(merged) == set(base)
    scale = ALPHA / R
    lora_modules = {k.split("base_model.model.", 1)[1].rsplit(".lora_A", 1)[0] for k in lora if ".lora_A" in k}
    assert len(lora_modules) == 2 * 7  # q k v o gate up down, per layer
    for key, want in base.items():
        got = merged[key].float()
        module = key.rsplit(".weight", 1)[0]
        if module in lora_modules:
            a = lora[f"base_model.model.{module}.lora_A.weight"].float()
            b = lora[f"base_model.model.{module}.lora_B.weight"].float()
            expected = want.float() + scale * (b @ a)
            # bf16 keeps 8 significant bits: a correct bf16 merge is within 2^-8 relative of the exact sum.
            err = (got - expected).abs()
            assert (err <= expected.abs() * 2**-8 + 1e-6).all(), f"{key}: max error {err.max():.3g}"
            assert not torch.equal(got, want.float())
        else:
            assert torch.equal(got, want.float()), f"{key}: changed by the merge (max {(got - want.float()).abs().max():.3g})"
    assert "model.embed_tokens.weight" in base  # the tied embedding is among the unchanged tensors
