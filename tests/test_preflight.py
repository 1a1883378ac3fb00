"""The preflight: its overrides are one small file of GPU-only and budget keys, it builds the
configs it runs from the profile's own, and a broken competition config key fails it with the
step and the key named. (The passing run, ~3-5 min on 2 cores, is `make preflight` in .ci/run.)"""
from __future__ import annotations

import pytest
import yaml

from maerak.profiles import get_profile
from pipeline import preflight

# What a CPU cannot run (bf16 AMP, tf32) and the time budget (one step; torchao's compiled step in stage 3).
GPU_OR_BUDGET = {"bf16", "tf32", "max_steps", "save_strategy", "optimizer", "optim_args"}


def test_overrides_touch_only_gpu_and_budget_keys():
    ov = preflight.load_overrides()
    assert set(ov["stages"]) == {"bf16", "tf32", "max_steps"}  # the GPU's optimizer and kernels keys run as set
    assert not ov.get("stage1") and not ov.get("stage2")
    touched = set(ov["stages"]) | set(ov.get("stage3") or {})
    assert touched <= GPU_OR_BUDGET, touched - GPU_OR_BUDGET
    # each override carries its reason, on its own line of the file
    text = preflight.OVERRIDES.read_text(encoding="utf-8")
    for key in touched:
        line = next(x for x in text.splitlines() if x.strip().startswith(f"{key}:"))
        assert "#" in line, line
    assert {"attn_logit_softcapping", "final_logit_softcapping"}.isdisjoint(ov["model"])  # Gemma-2's defaults kept


def test_stage_configs_are_the_profiles_own_plus_the_overrides():
    ov = preflight.load_overrides()
    real = get_profile("competition")
    for stage, name in preflight.STAGE_FILES.items():
        raw = yaml.safe_load((real.path("axolotl_configs") / name).read_text(encoding="utf-8"))
        got = preflight.override_stage(raw, ov, stage)
        changed = {k for k in got if got.get(k) != raw.get(k)}
        assert changed <= set(ov["stages"]) | set(ov.get(f"stage{stage}") or {})
        for key in ("learning_rate", "weight_decay", "micro_batch_size", "gradient_accumulation_steps", "sequence_len",
                    "sample_packing", "attn_implementation", "merge_method"):
            assert got.get(key) == raw.get(key), key
        if stage < 3:  # bitsandbytes' 8-bit AdamW steps on a CPU: the preflight runs it as the GPU does
            assert got["optimizer"] == raw["optimizer"] == "adamw_bnb_8bit"
        assert {k: got.get(k) for k in got if "kernel" in k} == {k: raw.get(k) for k in raw if "kernel" in k}


def test_tiny_base_is_gemma2_with_softcapping_and_a_sliding_window(tmp_path):
    from transformers import AutoConfig

    ov = preflight.load_overrides()
    preflight.build_base(get_profile("competition"), ov, tmp_path / "base")
    cfg = AutoConfig.from_pretrained(tmp_path / "base")
    assert cfg.model_type == "gemma2" and cfg.attn_logit_softcapping == 50.0 and cfg.final_logit_softcapping == 30.0
    assert cfg.sliding_window == ov["model"]["sliding_window"] and "sliding_attention" in cfg.layer_types


def test_a_broken_competition_key_fails_naming_the_step_and_the_key(tmp_path, capsys):
    src = get_profile("competition").path("axolotl_configs")
    broken = tmp_path / "configs"
    broken.mkdir()
    for name in preflight.STAGE_FILES.values():
        cfg = yaml.safe_load((src / name).read_text(encoding="utf-8"))
        if name.startswith("stage1"):
            cfg["lr_scheduler"] = "cosine_with_typo"
        (broken / name).write_text(yaml.safe_dump(cfg), encoding="utf-8")
    rc = preflight.main(["--configs", str(broken), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 1
    assert "FAILED at step 'stage 1'" in err and "lr_scheduler" in err, err[-2000:]
    assert not (tmp_path / "out" / "stage1" / "merged").exists()


def test_suspect_keys_come_from_names_or_quoted_values():
    cfg = {"lr_scheduler": "cosine_x", "base_model": "/m/base", "sequence_len": 1024, "seed": 3}
    assert preflight.suspect_keys(cfg, "ValueError: cosine_x is not a valid SchedulerType") == ["lr_scheduler"]
    assert preflight.suspect_keys(cfg, "ValidationError: 1 validation error | sequence_len | not an int") == ["sequence_len"]
    assert preflight.suspect_keys(cfg, "RuntimeError: out of memory") == []


def official_length_files(tokenizer, folder, conversation_tokens: int = 760) -> None:
    """train/dev/test of Korean items whose rows are as long as the official files' longest
    (bench/official_shape.py grows each conversation turn by turn to `conversation_tokens`)."""
    import json

    from bench.official_shape import synthetic_items

    folder.mkdir(parents=True)
    for i, split in enumerate(("train", "dev", "test")):
        items = synthetic_items(tokenizer, conversations=4, items_per_conversation=2,
                                conversation_tokens=conversation_tokens, seed=i)
        raws = [dict(it.raw, output="" if split == "test" else it.raw["output"]) for it in items]
        (folder / f"{split}.json").write_text(json.dumps(raws, ensure_ascii=False), encoding="utf-8")


def test_prepare_passes_on_official_length_korean_rows(tmp_path):
    """The tiny base counts lengths with a Gemma tokenizer: rows of the official maximum (~960
    Gemma tokens) stay under sequence_len 1024, as in the real run. (A 2000-piece BPE trained on
    the task's text counted official rows 10% longer and stopped prepare.)"""
    import json

    from transformers import AutoTokenizer

    real = get_profile("competition")
    ov = preflight.load_overrides()
    out = tmp_path / "out"
    preflight.build_base(real, ov, out / "base")
    tok = AutoTokenizer.from_pretrained(out / "base")
    assert len(tok) == 262144  # the embedded Gemma-3's vocabulary, not a BPE of the task's text
    official_length_files(tok, tmp_path / "raw")
    profile = preflight.preflight_profile(real, out / "axolotl_configs", str(tmp_path / "raw"), str(out))
    preflight.write_configs(real.path("axolotl_configs"), ov, profile, out / "base")
    note = preflight.step_prepare(profile, ov)
    assert "stage1" in note and "stage2" in note
    report = json.loads((profile.prepared / "report.json").read_text(encoding="utf-8"))
    lengths = report["token_lengths"]
    assert lengths["checked"] is True
    longest = max(src["max"] for stage in lengths["stages"].values() for src in stage["by_source"].values())
    assert 900 <= longest <= 1024, longest  # official length, and within sequence_len


@pytest.mark.e2e
def test_preflight_with_two_processes_runs_zero3_and_resumes(tmp_path, capsys):
    """`make preflight GPUS=2`: stage 2 through the real launch command (accelerate + DeepSpeed
    ZeRO-3) as 2 CPU processes, a checkpoint after one step, the run resumed from it, then submit."""
    rc = preflight.main(["--gpus", "2", "--out", str(tmp_path / "out")])
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    assert "--multi_gpu --num_processes 2" in out and "--deepspeed=axolotl_configs/deepspeed/zero3.json" in out
    assert "DeepSpeed ZeRO stage 3, 2 ranks' optimizer partitions" in out
    assert "stage 2: resuming from" in out and "resumed from checkpoint-1" in out
    assert '"world_size": 2' in out  # Axolotl's own dump of the config it trains with
    assert (tmp_path / "out" / "submission.json").is_file()


def test_the_cpu_launch_env_is_for_a_cpu_only(monkeypatch):
    import os

    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    with preflight.cpu_launch_env(cuda=True):
        assert "DS_ACCELERATOR" not in os.environ  # a CUDA host launches DeepSpeed on its GPUs (NCCL)
        assert str(preflight.CPU_DIST) not in os.environ.get("PYTHONPATH", "")
    with preflight.cpu_launch_env(cuda=False):
        assert os.environ["DS_ACCELERATOR"] == "cpu" and str(preflight.CPU_DIST) in os.environ["PYTHONPATH"]
    assert "DS_ACCELERATOR" not in os.environ
