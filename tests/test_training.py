"""Training stages: config resolution (paths + seed injected, hyperparameters untouched) and an end-to-end Axolotl run on a
tiny Gemma-3 (stage 1 QLoRA 4-bit -> merge -> stage 2 full fine-tune) on CPU."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from maerak.files import atomic_write_jsonl
from maerak.profiles import ROOT, Profile, get_profile
from training import axolotl_run as ar

CONFIGS = ROOT / "axolotl_configs"
INJECTED = {"base_model", "datasets", "output_dir", "dataset_prepared_path", "seed", "tokenizer_config"}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture
def competition() -> Profile:
    return get_profile("competition")


# The recipe's values in the competition configs: tests/test_recipe.py.


@pytest.mark.parametrize("profile", ["sample", "competition"])
def test_profiles_have_both_stage_configs_with_the_same_structure(profile):
    s1 = _yaml(CONFIGS / profile / "stage1_qlora.yml")
    s2 = _yaml(CONFIGS / profile / "stage2_full.yml")
    assert s1["adapter"] == "qlora" and s1["load_in_4bit"] is True
    assert "adapter" not in s2
    for cfg in (s1, s2):
        assert [d["type"] for d in cfg["datasets"]] == ["alpaca"]
        assert "seed" in cfg and "output_dir" in cfg


def test_sample_stage1_turns_off_the_cuda_lora_kernels():
    cfg = _yaml(CONFIGS / "sample" / "stage1_qlora.yml")
    assert cfg["lora_qkv_kernel"] is False and cfg["lora_o_kernel"] is False and cfg["lora_mlp_kernel"] is False
    assert not cfg.get("bf16")


@pytest.mark.parametrize("stage", [1, 2])
def test_resolution_injects_paths_and_seed_and_leaves_hyperparameters(competition, stage):
    raw = ar.load_yaml(competition.axolotl_config(stage))
    paths = ar.stage_paths(competition, stage)
    cfg = ar.resolve_config(raw, paths, seed=1234)
    assert cfg["seed"] == 1234
    assert cfg["output_dir"] == str(competition.stage1_dir if stage == 1 else competition.stage2_dir)
    assert cfg["base_model"] == ("google/gemma-2-9b-it" if stage == 1 else str(competition.merged_dir))
    assert cfg["datasets"] == [{**raw["datasets"][0], "path": str(competition.prepared / f"stage{stage}.jsonl"), "ds_type": "json"}]
    assert {k: v for k, v in cfg.items() if k not in INJECTED} == {k: v for k, v in raw.items() if k not in INJECTED}
    assert "deepspeed" not in cfg
    assert raw == ar.load_yaml(competition.axolotl_config(stage))  # the input dict is not mutated


def test_several_gpus_add_zero3_unless_the_yaml_names_deepspeed(competition):
    paths = ar.stage_paths(competition, 2)
    raw = ar.load_yaml(competition.axolotl_config(2))
    assert ar.resolve_config(raw, paths, 42, gpus=2)["deepspeed"] == "axolotl_configs/deepspeed/zero3.json"
    own = {**raw, "deepspeed": "axolotl_configs/deepspeed/zero2.json"}
    assert ar.resolve_config(own, paths, 42, gpus=4)["deepspeed"] == "axolotl_configs/deepspeed/zero2.json"
    cmd = ar.command("axolotl.cli.train", Path("c.yml"), gpus=2)
    assert cmd[1:5] == ["-m", "accelerate.commands.launch", "--num_processes", "2"]
    assert cmd[-3:] == ["-m", "axolotl.cli.train", "c.yml"]
    assert ar.command("axolotl.cli.train", Path("c.yml"))[1:] == ["-m", "axolotl.cli.train", "c.yml"]


def test_resolved_config_is_written_under_outputs(tmp_path):
    (tmp_path / "axolotl_configs" / "sample").mkdir(parents=True)
    for name in ("stage1_qlora.yml", "stage2_full.yml"):
        (tmp_path / "axolotl_configs" / "sample" / name).write_bytes((CONFIGS / "sample" / name).read_bytes())
    profile = Profile(name="sample", settings={**get_profile("sample").settings, "seed": 7}, root=tmp_path)
    path, cfg = ar.write_resolved(profile, 1)
    assert path == tmp_path / "outputs" / "sample" / "configs" / "stage1.yml"
    assert yaml.safe_load(path.read_text(encoding="utf-8")) == cfg and cfg["seed"] == 7


def test_missing_inputs_name_the_make_target(tmp_path):
    settings = {**get_profile("sample").settings}
    profile = Profile(name="sample", settings=settings, root=tmp_path)
    with pytest.raises(ar.TrainError, match="make prepare PROFILE=sample"):
        ar.check_inputs(profile, 1, ar.stage_paths(profile, 1))
    atomic_write_jsonl(profile.prepared / "stage1.jsonl", [{"instruction": "i", "input": "x", "output": "A"}])
    with pytest.raises(ar.TrainError, match="make model"):
        ar.check_inputs(profile, 1, ar.stage_paths(profile, 1))
    atomic_write_jsonl(profile.prepared / "stage2.jsonl", [{"instruction": "i", "input": "x", "output": "A"}])
    with pytest.raises(ar.TrainError, match="make train-stage1 PROFILE=sample"):
        ar.check_inputs(profile, 2, ar.stage_paths(profile, 2))


# --- end to end on a tiny Gemma-3 -------------------------------------------------

TINY_STAGE1 = {
    "model_type": "AutoModelForCausalLM",
    "tokenizer_type": "AutoTokenizer",
    "seed": 0,
    "load_in_4bit": True,
    "adapter": "qlora",
    "lora_r": 4,
    "lora_alpha": 8,
    "lora_dropout": 0.05,
    "lora_target_linear": True,
    "lora_qkv_kernel": False,
    "lora_o_kernel": False,
    "lora_mlp_kernel": False,
    "lora_embedding_kernel": False,
    "datasets": [{"path": "placeholder", "type": "alpaca"}],
    "dataset_processes": 1,
    "val_set_size": 0,
    "sequence_len": 2048,
    "max_steps": 2,
    "micro_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "optimizer": "adamw_torch",
    "learning_rate": 1e-3,
    "lr_scheduler": "cosine",
    "warmup_steps": 0,
    "bf16": False,
    "fp16": False,
    "tf32": False,
    "attn_implementation": "sdpa",
    "logging_steps": 1,
    "save_strategy": "no",
    "save_only_model": True,
}


def _tiny_stage2() -> dict:
    cfg = {k: v for k, v in TINY_STAGE1.items() if not k.startswith(("lora", "adapter", "load_in"))}
    return {**cfg, "learning_rate": 1e-4}


def test_end_to_end_tiny_qlora_merge_full(tmp_path, tiny_model_copy, sample_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from maerak.prompt import CYCLIC_ORDERS, alpaca_row, render_prompt
    from maerak.schema import load_items

    conf = tmp_path / "axolotl_configs" / "tiny"
    conf.mkdir(parents=True)
    (conf / "stage1_qlora.yml").write_text(yaml.safe_dump(TINY_STAGE1), encoding="utf-8")
    (conf / "stage2_full.yml").write_text(yaml.safe_dump(_tiny_stage2()), encoding="utf-8")
    settings = {"base_model": "model", "axolotl_configs": "axolotl_configs/tiny", "offline": True, "seed": 3}
    profile = Profile(name="tiny", settings=settings, root=tmp_path)
    assert Path(profile.base_model) == tiny_model_copy

    items, _ = load_items(sample_dir / "train.json", require_labels=True)
    atomic_write_jsonl(profile.prepared / "stage1.jsonl", [alpaca_row(it) for it in items[:8]])
    atomic_write_jsonl(profile.prepared / "stage2.jsonl", [alpaca_row(it, o) for it in items[:4] for o in CYCLIC_ORDERS])

    ar.train(profile, 1)
    assert (profile.stage1_dir / "adapter_config.json").is_file()
    resolved = yaml.safe_load(ar.resolved_path(profile, 1).read_text(encoding="utf-8"))
    assert resolved["seed"] == 3 and resolved["base_model"] == str(tiny_model_copy)
    assert resolved["max_steps"] == 2 and resolved["load_in_4bit"] is True

    ar.merge(profile)
    assert (profile.merged_dir / "config.json").is_file()

    out = ar.train(profile, 2)
    assert out == profile.stage2_dir
    resolved2 = yaml.safe_load(ar.resolved_path(profile, 2).read_text(encoding="utf-8"))
    assert resolved2["base_model"] == str(profile.merged_dir)

    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_copy, dtype=torch.float32)
    batch = tokenizer(render_prompt(items[0]), return_tensors="pt")
    with torch.no_grad():
        logits = model(**batch).logits
        base_logits = base(**batch).logits
    assert logits.shape == (1, batch["input_ids"].shape[1], len(tokenizer))
    assert torch.isfinite(logits).all()
    assert not torch.allclose(logits, base_logits)  # training changed the weights
    # ... and the stage-2 checkpoint writes a valid submission through the user's verb.
    from inference.check_submission import main as check_main
    from inference.submit import main as submit_main

    submission = tmp_path / "submission.json"
    test_file = sample_dir / "test.json"
    assert submit_main(["--profile", "sample", "--model", str(out), "--input", str(test_file),
                        "--output", str(submission), "--quiet"]) == 0
    assert check_main(["--submission", str(submission), "--test", str(test_file)]) == 0
