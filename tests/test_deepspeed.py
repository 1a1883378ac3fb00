"""DeepSpeed configs for multi-GPU stage 2, checked without a GPU.

accelerate's DeepSpeedPlugin loads each file (what `accelerate launch` / Axolotl do
first), and its `deepspeed_config_process` fills every "auto" from the values the
HF Trainer passes: an "auto" nobody fills raises, exactly as it would at launch.
Then the chain a launch runs: the installed deepspeed package imports, transformers'
TrainingArguments take each file with the competition stage-2 config's values,
the Trainer's finalize step fills the model-size "auto"s, and deepspeed's own
config parser accepts the result.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

accelerate_utils = pytest.importorskip("accelerate.utils")
DeepSpeedPlugin = accelerate_utils.DeepSpeedPlugin

DS_DIR = Path(__file__).resolve().parent.parent / "axolotl_configs" / "deepspeed"
CONFIGS = {
    "zero2.json": {"stage": 2, "offload_optimizer": None, "offload_param": None},
    "zero3.json": {"stage": 3, "offload_optimizer": None, "offload_param": None},
    "zero3_offload.json": {"stage": 3, "offload_optimizer": "cpu", "offload_param": "cpu"},
}

# What transformers' HfTrainerDeepSpeedConfig fills from TrainingArguments and the model
# (hidden_size 3584 = gemma-2-9b); values of the competition's stage 2 on 2 GPUs.
HIDDEN = 3584
TRAINER_FILLS = {
    "train_micro_batch_size_per_gpu": 3,
    "gradient_accumulation_steps": 5,
    "train_batch_size": 3 * 5 * 2,
    "gradient_clipping": 1.0,
    "bf16.enabled": True,
    "fp16.enabled": False,
    "optimizer.params.lr": 2e-5,
    "optimizer.params.betas": [0.9, 0.999],
    "optimizer.params.eps": 1e-8,
    "optimizer.params.weight_decay": 0.05,
    "zero_optimization.reduce_bucket_size": HIDDEN * HIDDEN,
    "zero_optimization.stage3_prefetch_bucket_size": int(0.9 * HIDDEN * HIDDEN),
    "zero_optimization.stage3_param_persistence_threshold": 10 * HIDDEN,
}


def _autos(node, prefix=""):
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _autos(value, f"{prefix}{key}.")
    elif node == "auto":
        yield prefix[:-1]


def test_the_three_files_are_there():
    assert sorted(p.name for p in DS_DIR.glob("*.json")) == sorted(CONFIGS)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_loads_with_accelerate_and_keys(name):
    path = DS_DIR / name
    raw = json.loads(path.read_text(encoding="utf-8"))
    plugin = DeepSpeedPlugin(hf_ds_config=str(path))
    want = CONFIGS[name]
    assert plugin.zero_stage == want["stage"] == raw["zero_optimization"]["stage"]
    assert plugin.hf_ds_config.is_zero3() == (want["stage"] == 3)
    assert plugin.hf_ds_config.is_offload() == bool(want["offload_optimizer"] or want["offload_param"])
    zero = raw["zero_optimization"]
    for key in ("offload_optimizer", "offload_param"):
        got = zero.get(key, {}).get("device")
        assert got == want[key], f"{name}: {key} device {got!r}"
    # Precision comes from the Axolotl config (bf16: auto/true), never hard-coded here.
    assert raw["bf16"]["enabled"] == "auto"
    assert raw["fp16"]["enabled"] == "auto"
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size", "gradient_clipping"):
        assert raw[key] == "auto", f"{name}: {key} must be 'auto' (Axolotl sets it from the yml)"
    if want["stage"] == 3:
        # The stage-2 checkpoint must be a normal HF model after training, not ZeRO shards only.
        assert zero["stage3_gather_16bit_weights_on_model_save"] is True


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_auto_is_filled_by_the_trainer(name):
    plugin = DeepSpeedPlugin(hf_ds_config=str(DS_DIR / name))
    assert set(_autos(plugin.deepspeed_config)) <= set(TRAINER_FILLS), "an 'auto' the HF Trainer does not fill"
    plugin.deepspeed_config_process(must_match=False, **TRAINER_FILLS)
    assert list(_autos(plugin.deepspeed_config)) == []
    assert plugin.deepspeed_config["train_batch_size"] == 30


def test_offload_uses_deepspeeds_cpu_optimizer():
    """ZeRO-Offload steps the optimizer on the CPU: bitsandbytes' 8-bit AdamW has no CPU kernel,
    so the offload config names DeepSpeed's AdamW (CPUAdam), with lr/betas/eps/decay from the trainer."""
    raw = json.loads((DS_DIR / "zero3_offload.json").read_text(encoding="utf-8"))
    assert raw["optimizer"]["type"] == "AdamW"
    assert set(raw["optimizer"]["params"]) == {"lr", "betas", "eps", "weight_decay"}
    assert raw["zero_optimization"]["offload_optimizer"]["pin_memory"] is True


def test_an_unfillable_auto_fails():
    """The check above can fail: an 'auto' that nobody fills is an error at launch."""
    plugin = DeepSpeedPlugin(hf_ds_config={"zero_optimization": {"stage": 3, "sub_group_size": "auto"},
                                           "train_micro_batch_size_per_gpu": "auto"})
    with pytest.raises(ValueError, match="sub_group_size"):
        plugin.deepspeed_config_process(must_match=False, **TRAINER_FILLS)


def test_deepspeed_imports():
    # No importorskip: deepspeed is in requirements.lock, so a missing package is a failure.
    from importlib.metadata import version

    import deepspeed

    lock = (DS_DIR.parent.parent / "requirements.lock").read_text(encoding="utf-8").splitlines()
    assert f"deepspeed=={deepspeed.__version__}" in lock
    assert version("deepspeed") == deepspeed.__version__


def _stage2_competition(ds_file: str) -> dict:
    """The competition stage-2 config as `make train-stage2 GPUS=2` runs it (the YAML plus Axolotl's
    `--deepspeed=` override), naming `ds_file`."""
    from maerak.profiles import get_profile
    from training import axolotl_run as ar

    raw = get_profile("competition").stage_config(2)
    assert ar.overrides(raw, gpus=2) == ["--deepspeed=axolotl_configs/deepspeed/zero3.json"]
    return {**raw, "deepspeed": f"axolotl_configs/deepspeed/{ds_file}"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_transformers_and_deepspeed_accept_each_file_with_the_competition_stage2(name, tmp_path):
    from types import SimpleNamespace

    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import Gemma2Config, TrainingArguments

    cfg = _stage2_competition(name)
    assert cfg["bf16"] is True
    args = TrainingArguments(
        output_dir=str(tmp_path), deepspeed=str(DS_DIR.parent.parent / cfg["deepspeed"]), report_to=[],
        per_device_train_batch_size=cfg["micro_batch_size"], gradient_accumulation_steps=cfg["gradient_accumulation_steps"],
        learning_rate=float(cfg["learning_rate"]), weight_decay=float(cfg["weight_decay"]), bf16=cfg["bf16"],
        lr_scheduler_type=cfg["lr_scheduler"], warmup_steps=cfg["warmup_steps"],
        use_cpu=True,  # only so that bf16 passes TrainingArguments' device check on this CPU machine
    )
    assert args.deepspeed_plugin is not None  # accelerate's plugin, built by TrainingArguments
    ds = args.hf_deepspeed_config
    ds.trainer_config_finalize(args, SimpleNamespace(config=Gemma2Config(hidden_size=HIDDEN)), num_training_steps=1000)
    final = ds.config
    assert list(_autos(final)) == []
    assert final["train_micro_batch_size_per_gpu"] == cfg["micro_batch_size"]
    assert final["gradient_accumulation_steps"] == cfg["gradient_accumulation_steps"]
    assert final["bf16"]["enabled"] is True and final["fp16"]["enabled"] is False
    if "optimizer" in final:
        assert final["optimizer"]["params"]["weight_decay"] == float(cfg["weight_decay"])
    parsed = DeepSpeedConfig(final)
    assert parsed.zero_optimization_stage == CONFIGS[name]["stage"]
    assert parsed.bfloat16_config.enabled and parsed.train_batch_size == cfg["micro_batch_size"] * cfg["gradient_accumulation_steps"]
