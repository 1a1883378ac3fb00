"""Shared fixtures: tiny Gemma-architecture models built inside the tests (no hub, no downloads).

The tokenizer is a byte-level BPE trained by `tokenizers` on the sample data, so
every Korean string encodes without unknown tokens and a training step takes
well under a second.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "sample"
FIXTURES = Path(__file__).resolve().parent / "fixtures"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def build_tiny_tokenizer(vocab_size: int = 2000):
    from maerak.tiny_model import build_bpe_tokenizer, task_corpus

    return build_bpe_tokenizer(task_corpus([SAMPLE / f"{s}.json" for s in ("train", "dev", "test")]), vocab_size)


def build_tiny_model(tokenizer, seed: int = 0, **config_overrides):
    import torch
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=2048,
        sliding_window=64,
        # One full-attention layer, so padding-mask bugs are visible on long prompts.
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    for key, value in config_overrides.items():  # e.g. head_dim=64: vLLM's CPU attention has no 16-wide kernel
        setattr(config, key, value)
    return Gemma3ForCausalLM(config)


def save_tiny_checkpoint(path: Path, seed: int = 0, **config_overrides) -> Path:
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(tokenizer, seed=seed, **config_overrides)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_stage_configs(profile, stage1: dict | None, stage2: dict | None, base_model: str | Path | None = None,
                        stage3: dict | None = None) -> None:
    """Stage YAMLs for a test's own profile layout, written where the profile reads them (its
    axolotl_configs folder), with that layout's paths: the pipeline then runs them as they are."""
    from training.axolotl_run import placed

    for stage, cfg in ((1, stage1), (2, stage2), (3, stage3)):
        if cfg is not None:
            path = profile.axolotl_config(stage)
            path.parent.mkdir(parents=True, exist_ok=True)
            cfg = placed(cfg, profile, stage, base_model=base_model if stage == 1 else None)
            path.write_text(yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True), encoding="utf-8")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny Gemma-3 checkpoint (model + tokenizer), built once per test session."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny-gemma") / "model")


@pytest.fixture
def tiny_model_copy(tiny_model_dir, tmp_path) -> Path:
    """A private copy for tests that write into the checkpoint directory."""
    dest = tmp_path / "model"
    shutil.copytree(tiny_model_dir, dest)
    return dest


@pytest.fixture
def sample_dir() -> Path:
    return SAMPLE


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


def simulate_oom(scorer, fits: int) -> list[int]:
    """Make `scorer.forward` (the continuation rows on a context's cache) raise CUDA out-of-memory
    for more than `fits` rows; returns the row counts it was called with (filled as the scorer runs)."""
    import torch

    real_forward, seen = scorer.forward, []

    def small_gpu(cache, rows):
        seen.append(len(rows))
        if len(rows) > fits:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_forward(cache, rows)

    scorer.forward = small_gpu
    return seen
