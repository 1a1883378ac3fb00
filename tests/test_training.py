"""Training stages: the stage YAMLs run as they are (the pipeline reads its paths from them, only Axolotl's
own overrides added) and an end-to-end Axolotl run on a tiny Gemma-3 (stage 1 QLoRA 4-bit -> merge -> stage 2 full fine-tune) on CPU."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from maerak.errors import ConfigError
from maerak.files import atomic_write_jsonl
from maerak.profiles import ROOT, Profile, get_profile
from tests.conftest import write_stage_configs
from training import axolotl_run as ar

CONFIGS = ROOT / "axolotl_configs"
INJECTED = {"base_model", "datasets", "output_dir", "dataset_prepared_path", "seed", "tokenizer_config"}


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture
def competition() -> Profile:
    return get_profile("competition")


# The stage YAMLs' values (the recipe's, and what each profile relies on): tests/test_recipe.py, one table.


def _copy_configs(root: Path, profile: str = "sample") -> Profile:
    (root / "axolotl_configs" / profile).mkdir(parents=True)
    for name in ("stage1_qlora.yml", "stage2_full.yml", "stage3_orpo.yml"):
        (root / "axolotl_configs" / profile / name).write_bytes((CONFIGS / profile / name).read_bytes())
    return Profile(name=profile, settings=get_profile(profile).settings, root=root)


@pytest.mark.parametrize("name", ["sample", "official-cpu", "competition"])
def test_each_stage_yaml_is_the_file_axolotl_runs_and_holds_the_pipelines_paths(name):
    profile = get_profile(name)
    for stage in (1, 2):
        path, cfg = ar.stage_config(profile, stage)
        assert path == profile.axolotl_config(stage)
        # the pipeline's paths are the YAML's own: output_dir, datasets[0].path, stage 2 from stage 1's merge
        assert profile.stage_paths(stage).output_dir == ROOT / cfg["output_dir"] == profile.out / f"stage{stage}"
        assert profile.stage_data(stage) == ROOT / cfg["datasets"][0]["path"]
    assert ROOT / _yaml(profile.axolotl_config(2))["base_model"] == profile.merged_dir == profile.stage1_dir / "merged"
    # stage 3 (ORPO, preference: true) trains stage 2's model into the checkpoint submit scores
    assert profile.stage_paths(3).output_dir == profile.out / "stage3" == profile.stage3_dir
    assert profile.final_dir == (profile.stage3_dir if profile.config.preference else profile.stage2_dir)
    assert ROOT / _yaml(profile.axolotl_config(3))["base_model"] == profile.stage2_dir
    assert profile.stage_data(3) == profile.prepared / "stage3.jsonl"
    # the base model and the seed are written once: stage 1's YAML (stage 2 starts from stage 1's merge)
    assert profile.base_model_name == _yaml(profile.axolotl_config(1))["base_model"]
    assert profile.seed == _yaml(profile.axolotl_config(1))["seed"] == _yaml(profile.axolotl_config(2))["seed"]
    assert "base_model" not in profile.settings and "seed" not in profile.settings


def test_no_stage_yaml_is_strict_so_axolotl_applies_the_command_line_overrides():
    # axolotl/cli/config.py load_cfg: a `--key=value` whose key is not in the YAML is applied only
    # when `strict` is unset; `--deepspeed=` and `--resume_from_checkpoint=` are such keys.
    for path in sorted(CONFIGS.glob("*/stage*.yml")):
        assert not _yaml(path).get("strict"), path


@pytest.mark.parametrize("stage", [1, 2])
def test_train_runs_the_yaml_as_it_is_with_only_axolotls_own_overrides(competition, stage, monkeypatch, tmp_path):
    ran = []
    monkeypatch.setattr(ar, "run", lambda cmd, cwd: ran.append((cmd, cwd)) or 0.0)
    monkeypatch.setattr(ar, "check_inputs", lambda *a: None)
    monkeypatch.setattr(ar, "ensure_final_checkpoint", lambda *a: None)
    profile = Profile(name="competition", settings={**competition.settings, "out": str(tmp_path / "out")}, root=ROOT)
    before = competition.axolotl_config(stage).read_bytes()
    with pytest.raises(ConfigError, match="output_dir: 'outputs/competition/stage.' is outside"):  # not under this `out`
        ar.train(profile, stage)
    ar.train(competition, stage, gpus=2)
    cmd, cwd = ran[-1]
    assert cwd == ROOT and cmd[-3:-1] == [str(competition.axolotl_config(stage)), "--deepspeed=axolotl_configs/deepspeed/zero3.json"]
    cache = competition.stage_config(stage)["dataset_prepared_path"]
    assert re.fullmatch(rf"--dataset_prepared_path={ROOT}/{cache}/[0-9a-f]{{16}}", cmd[-1])  # keyed by content
    assert competition.axolotl_config(stage).read_bytes() == before  # never rewritten
    assert not (competition.out / "configs").exists() or not any((competition.out / "configs").glob("stage*.yml"))


def test_placed_configs_change_only_the_path_keys(competition, tmp_path):
    """The preflight's and the tests' own layouts: the same config, other paths (the input is not mutated)."""
    other = Profile(name="competition", settings={**competition.settings, "out": "outputs/elsewhere"}, root=ROOT)
    for stage in (1, 2):
        raw = competition.stage_config(stage)
        cfg = ar.placed(raw, other, stage, base_model="models/tiny" if stage == 1 else None)
        assert cfg["output_dir"] == f"outputs/elsewhere/stage{stage}"
        assert cfg["base_model"] == ("models/tiny" if stage == 1 else "outputs/elsewhere/stage1/merged")
        assert cfg["datasets"] == [{**raw["datasets"][0], "path": f"outputs/elsewhere/prepared/stage{stage}.jsonl"}]
        assert {k: v for k, v in cfg.items() if k not in INJECTED} == {k: v for k, v in raw.items() if k not in INJECTED}
        assert raw == competition.stage_config(stage)


@pytest.mark.parametrize("stage, old, new, says", [
    (2, "output_dir: outputs/sample/stage2", "output_dir: elsewhere", r"stage2_full.yml: output_dir: 'elsewhere' is outside outputs/sample/"),
    (2, "base_model: outputs/sample/stage1/merged", "base_model: outputs/sample/stage1",
     r"stage2_full.yml: base_model: 'outputs/sample/stage1', but stage 1's merge writes outputs/sample/stage1/merged"),
    (1, "output_dir: outputs/sample/stage1", "output_dir: outputs/sample/s1",
     r"stage2_full.yml: base_model: 'outputs/sample/stage1/merged', but stage 1's merge writes outputs/sample/s1/merged"),
    (1, "  - path: outputs/sample/prepared/stage1.jsonl", "  - path: 3", r"stage1_qlora.yml: datasets\[0\].path: 3: expected a path"),
])
def test_a_stage_yaml_whose_paths_do_not_fit_together_is_one_line_naming_file_and_key(tmp_path, stage, old, new, says):
    profile = _copy_configs(tmp_path)
    path = profile.axolotl_config(stage)
    assert old in path.read_text(encoding="utf-8")
    path.write_text(path.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    with pytest.raises(ConfigError, match=says):
        ar.stage_config(profile, 2)


def test_moving_a_stage_output_in_its_yaml_moves_it_for_the_whole_pipeline(tmp_path):
    """Stated once: the pipeline follows the YAML (prepare's file, the training check, reproduce's plan)."""
    from pipeline.reproduce import plan

    profile = _copy_configs(tmp_path)
    for stage in (1, 2):
        path = profile.axolotl_config(stage)
        path.write_text(path.read_text(encoding="utf-8").replace("outputs/sample/prepared/", "outputs/sample/data/")
                        .replace("outputs/sample/stage1", "outputs/sample/lora"), encoding="utf-8")
    assert profile.stage_data(2) == tmp_path / "outputs/sample/data/stage2.jsonl"
    assert profile.merged_dir == tmp_path / "outputs/sample/lora/merged"
    steps = {s.name: s for s in plan(profile)}
    assert profile.stage_data(1) in steps["prepare"].outputs and profile.stage_data(2) in steps["train-stage2"].inputs
    assert steps["merge"].outputs == (tmp_path / "outputs/sample/lora/merged",)


def test_several_gpus_add_zero3_unless_the_yaml_names_deepspeed(competition):
    raw = competition.stage_config(2)
    assert ar.overrides(raw, gpus=2) == ["--deepspeed=axolotl_configs/deepspeed/zero3.json"]
    own = {**raw, "deepspeed": "axolotl_configs/deepspeed/zero2.json"}
    assert ar.overrides(own, gpus=4) == [] and ar.overrides(raw, gpus=1) == []
    cmd = ar.command("axolotl.cli.train", Path("c.yml"), gpus=2)
    assert cmd[1:6] == ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    assert cmd[-3:] == ["-m", "axolotl.cli.train", "c.yml"]
    assert ar.command("axolotl.cli.train", Path("c.yml"))[1:] == ["-m", "axolotl.cli.train", "c.yml"]


def test_missing_inputs_name_the_make_target(tmp_path):
    profile = _copy_configs(tmp_path)
    with pytest.raises(ar.TrainError, match="make prepare PROFILE=sample"):
        ar.check_inputs(profile, 1)
    atomic_write_jsonl(profile.prepared / "stage1.jsonl", [{"instruction": "i", "input": "x", "output": "A"}])
    with pytest.raises(ar.TrainError, match="make model"):
        ar.check_inputs(profile, 1)
    atomic_write_jsonl(profile.prepared / "stage2.jsonl", [{"instruction": "i", "input": "x", "output": "A"}])
    with pytest.raises(ar.TrainError, match="make train-stage1 PROFILE=sample"):
        ar.check_inputs(profile, 2)
    atomic_write_jsonl(profile.stage_data(3), [{"prompt": "p", "chosen": "A", "rejected": "B"}])
    with pytest.raises(ar.TrainError, match="make train-stage2 PROFILE=sample"):
        ar.check_inputs(profile, 3)


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
    "datasets": [{"path": "placeholder", "ds_type": "json", "type": "alpaca"}],
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

    profile = Profile(name="tiny", settings={"axolotl_configs": "axolotl_configs/tiny", "offline": True}, root=tmp_path)
    # Stage 2 as the profiles' YAMLs: TensorBoard on, checkpoints whose log_history outlives them.
    stage2 = {**_tiny_stage2(), "use_tensorboard": True, "save_strategy": "steps", "save_steps": 1}
    write_stage_configs(profile, {**TINY_STAGE1, "seed": 3}, stage2, base_model="model")
    assert Path(profile.base_model) == tiny_model_copy

    items, _ = load_items(sample_dir / "train.json", require_labels=True)
    atomic_write_jsonl(profile.prepared / "stage1.jsonl", [alpaca_row(it) for it in items[:8]])
    atomic_write_jsonl(profile.prepared / "stage2.jsonl", [alpaca_row(it, o) for it in items[:4] for o in CYCLIC_ORDERS])

    ar.train(profile, 1)
    assert (profile.stage1_dir / "adapter_config.json").is_file()
    ran = _yaml(profile.axolotl_config(1))  # the file Axolotl ran, as it is
    assert ran["seed"] == 3 and (tmp_path / ran["base_model"]) == tiny_model_copy
    assert ran["max_steps"] == 2 and ran["load_in_4bit"] is True

    ar.merge(profile)
    assert (profile.merged_dir / "config.json").is_file()

    out = ar.train(profile, 2)
    assert out == profile.stage2_dir
    assert tmp_path / _yaml(profile.axolotl_config(2))["base_model"] == profile.merged_dir
    # What a person reads of the training: TensorBoard event files under the profile's outputs
    # (`tensorboard --logdir outputs/<profile>`) and the log_history evaluate draws.
    events = list((out / "runs").rglob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    assert [e.step for e in acc.Scalars("train/loss")] == [1, 2]  # what `tensorboard --logdir` draws
    assert not list(out.glob("checkpoint-*"))
    from inference.curves import read_log_history, series, write_curves

    history = read_log_history(out / "trainer_state.json")
    assert [r["step"] for r in history if "loss" in r] == [1, 2]
    assert {"loss", "learning_rate", "grad_norm"} <= set(series(history))
    assert write_curves({"stage2": out}, tmp_path / "eval") == (["curves_stage2.png"], [])

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


def test_fp32_master_weights_plugin_keeps_float32_weights_under_bf16(tmp_path, tiny_model_copy, sample_dir, capsys):
    """Issue 17: `bf16: true` loads the model in bf16 (Axolotl's torch_dtype) and turns on the
    Trainer's bf16 autocast; the plugin casts the weights back to float32 after loading, so
    AdamW updates float32 weights and the checkpoint is float32, while the matmuls run in bf16."""
    from safetensors import safe_open

    from maerak.prompt import alpaca_row
    from maerak.schema import load_items

    profile = Profile(name="tiny", settings={"axolotl_configs": "axolotl_configs/tiny", "offline": True}, root=tmp_path)
    plugins = ["training.answer_loss.AnswerLossPlugin", "training.master_weights.Fp32MasterWeightsPlugin"]
    write_stage_configs(profile, {**_tiny_stage2(), "bf16": True, "plugins": plugins, "save_safetensors": True}, None,
                        base_model="model")
    items, _ = load_items(sample_dir / "train.json", require_labels=True)
    atomic_write_jsonl(profile.prepared / "stage1.jsonl", [alpaca_row(it) for it in items[:4]])
    ar.train(profile, 1)
    log = capsys.readouterr().out
    assert "float32 master weights:" in log and "tensors cast to float32" in log
    files = list(profile.stage1_dir.glob("*.safetensors"))
    assert files
    with safe_open(str(files[0]), "pt") as fh:
        dtypes = {str(fh.get_tensor(k).dtype) for k in fh.keys()}
    assert dtypes == {"torch.float32"}


def test_fp32_master_weights_plugin_casts_and_refuses_what_it_cannot_keep():
    import torch
    from axolotl.utils.dict import DictDefault

    from training.master_weights import Fp32MasterWeightsPlugin

    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)).to(torch.bfloat16)
    Fp32MasterWeightsPlugin().post_model_load(DictDefault({"bf16": True}), model)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    with pytest.raises(ValueError, match="quantized model"):
        Fp32MasterWeightsPlugin().post_model_load(DictDefault({"bf16": True, "load_in_4bit": True}), model)
    # bf16 off (`bf16: auto` resolved to float32): nothing to cast, nothing refused.
    Fp32MasterWeightsPlugin().post_model_load(DictDefault({"bf16": False}), model)
