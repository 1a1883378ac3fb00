"""Answer-position logits (training/answer_loss.py): the same loss and gradients as the standard path.

Tiny fp32 models built here: Gemma-3 with final-logit softcapping switched on, Gemma-2
(softcapping 30 by default) and Llama (none), right-padded batches and a packed row.
"""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import yaml

from maerak.profiles import ROOT
from training.answer_loss import MARK, enable, shift, trained_positions

VOCAB = 300
LOSS_RTOL = 1e-5
GRAD_RTOL = 1e-4


def tiny(kind: str):
    from transformers import (
        Gemma2Config,
        Gemma2ForCausalLM,
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        LlamaConfig,
        LlamaForCausalLM,
    )

    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=16, max_position_embeddings=256, pad_token_id=0)
    if kind == "gemma3":
        cfg = Gemma3TextConfig(**common, sliding_window=16, layer_types=["sliding_attention", "full_attention"],
                               final_logit_softcapping=0.5)  # a cap near the logits' size: tanh is far from linear
        return Gemma3ForCausalLM(cfg)
    if kind == "gemma2":
        cfg = Gemma2Config(**common, sliding_window=16, attn_implementation="eager")
        assert cfg.final_logit_softcapping == 30.0
        return Gemma2ForCausalLM(cfg)
    return LlamaForCausalLM(LlamaConfig(**common))


def padded_batch() -> dict:
    """Two right-padded rows, each trained on its last two real tokens (answer letter, EOS)."""
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, VOCAB, (2, 48), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 40:] = 0
    ids[1, 40:] = 0
    labels = torch.full_like(ids, -100)
    labels[0, 46:48] = ids[0, 46:48]
    labels[1, 38:40] = ids[1, 38:40]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def packed_batch() -> dict:
    """One row packing three sequences (positions restart); each trains its last two tokens, prompts and boundaries -100."""
    g = torch.Generator().manual_seed(2)
    lengths = [20, 31, 13]
    ids = torch.randint(1, VOCAB, (1, sum(lengths)), generator=g)
    labels = torch.full_like(ids, -100)
    position_ids, start = [], 0
    for n in lengths:
        position_ids += list(range(n))
        labels[0, start + n - 2:start + n] = ids[0, start + n - 2:start + n]
        start += n
    return {"input_ids": ids, "position_ids": torch.tensor([position_ids]), "labels": labels}


def loss_and_grads(model, batch, **kwargs) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**batch, **kwargs)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


def assert_same(standard, answer) -> None:
    (loss_s, grads_s), (loss_a, grads_a) = standard, answer
    assert torch.isfinite(loss_s)
    assert abs(loss_a - loss_s) <= LOSS_RTOL * abs(loss_s), (float(loss_s), float(loss_a))
    assert grads_s.keys() == grads_a.keys() and grads_s
    for name, g in grads_s.items():
        scale = g.norm()
        assert scale > 0, f"{name}: no gradient on the standard path"
        assert (grads_a[name] - g).norm() <= GRAD_RTOL * scale, name


def pair(kind: str):
    standard = tiny(kind)
    answer = copy.deepcopy(standard)
    enable(answer)
    return standard, answer


@pytest.mark.parametrize("kind", ["gemma3", "gemma2", "llama"])
def test_same_loss_and_gradients_on_padded_rows(kind):
    standard, answer = pair(kind)
    batch = padded_batch()
    assert_same(loss_and_grads(standard, batch), loss_and_grads(answer, batch))


@pytest.mark.parametrize("kind", ["gemma3", "llama"])
def test_same_loss_and_gradients_on_a_packed_row(kind):
    standard, answer = pair(kind)
    batch = packed_batch()
    assert_same(loss_and_grads(standard, batch), loss_and_grads(answer, batch))


def test_softcapping_is_on_the_answer_path():
    """Guard for the tests above: a path that skipped the cap would show on these logits."""
    _, answer = pair("gemma3")
    batch = padded_batch()
    with torch.no_grad():
        capped = float(answer(**batch).loss)
    answer.config.final_logit_softcapping = None
    with torch.no_grad():
        uncapped = float(answer(**batch).loss)
    assert abs(capped - uncapped) > 10 * LOSS_RTOL * abs(uncapped)  # ~100x the exactness tolerance here


def test_num_items_in_batch_scales_the_loss_as_the_standard_path():
    """Gradient accumulation: the trainer passes the token count of all micro-batches."""
    standard, answer = pair("gemma3")
    batch = padded_batch()
    n = torch.tensor(11)
    assert_same(loss_and_grads(standard, batch, num_items_in_batch=n), loss_and_grads(answer, batch, num_items_in_batch=n))


def test_gradient_checkpointing_gives_the_same_gradients():
    standard, answer = pair("gemma3")
    for m in (standard, answer):
        m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m.train()
    batch = padded_batch()
    assert_same(loss_and_grads(standard, batch), loss_and_grads(answer, batch))


def test_peft_wrapped_model_is_patched_underneath():
    from peft import LoraConfig, get_peft_model

    base = tiny("gemma3")
    # random B (not the zero init) so that lora_A gets a gradient to compare
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False)
    standard = get_peft_model(copy.deepcopy(base), lora)
    answer = get_peft_model(copy.deepcopy(base), lora)
    answer.load_state_dict(standard.state_dict())
    inner = enable(answer)
    assert getattr(inner, MARK) and inner is answer.get_base_model()
    batch = padded_batch()
    assert_same(loss_and_grads(standard, batch), loss_and_grads(answer, batch))


def test_logits_are_computed_only_at_trained_positions_and_inference_is_untouched():
    _, answer = pair("gemma3")
    batch = padded_batch()
    out = answer(**batch)
    # rows train positions {46, 47} and {38, 39}; their shifted targets sit one earlier: {37, 38, 45, 46}
    assert trained_positions(shift(batch["labels"])).tolist() == [37, 38, 45, 46]
    assert out.logits.shape == (2, 4, VOCAB)
    no_labels = {k: v for k, v in batch.items() if k != "labels"}
    assert answer(**no_labels).logits.shape == (2, 48, VOCAB)
    assert answer(**no_labels, logits_to_keep=1).logits.shape == (2, 1, VOCAB)
    assert enable(answer) is enable(answer)  # idempotent: the forward is wrapped once


def test_a_model_without_logits_to_keep_is_refused():
    class NoKeep(torch.nn.Module):
        def get_output_embeddings(self):
            return torch.nn.Linear(2, 2)

        def forward(self, input_ids=None, labels=None):
            return None

    with pytest.raises(ValueError, match="NoKeep.forward takes no `logits_to_keep`"):
        enable(NoKeep())


@pytest.mark.parametrize("path", sorted((ROOT / "axolotl_configs").glob("*/stage*.yml")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_stage_yaml_switches_it_on(path: Path):
    """SFT stages through the plugin; the ORPO stage through its own trainer, which computes logits
    only at completion positions itself (training/orpo_trainer.py)."""
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    if cfg.get("rl") == "orpo":
        assert cfg.get("trainer_cls") == "training.orpo_trainer.AnswerORPOTrainer"
    else:
        assert "training.answer_loss.AnswerLossPlugin" in cfg.get("plugins", [])


# --- through the trainer production runs: Axolotl's ---------------------------------------------

def axolotl_trainer(model, tmp_path: Path, grad_accum: int = 2):
    from axolotl.core.trainers.base import AxolotlTrainer
    from axolotl.core.training_args import AxolotlTrainingArguments

    args = AxolotlTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=2, report_to=[],
                                    gradient_accumulation_steps=grad_accum, use_cpu=True, save_strategy="no")
    return AxolotlTrainer(model=model, args=args)


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
def test_under_axolotls_trainer_each_micro_batch_loss_is_its_own_mean(tmp_path, peft):
    """Axolotl 0.19 (axolotl/core/trainers/base.py, AxolotlTrainer.__init__) sets
    model_accepts_loss_kwargs False when the inner forward has no `num_items_in_batch` parameter,
    which holds for Gemma with or without the plugin: the trainer never passes it, each
    micro-batch's loss is the mean over its own trained tokens, and transformers divides it by the
    accumulation steps. The plugin's loss and gradients match the standard path on that path too."""
    base = tiny("gemma3")
    standard, answer = copy.deepcopy(base), copy.deepcopy(base)
    if peft:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, init_lora_weights=False)
        standard = get_peft_model(standard, lora)
        answer = get_peft_model(answer, lora)
        answer.load_state_dict(standard.state_dict())
    enable(answer)
    batch = padded_batch()
    results = []
    for model in (standard, answer):
        trainer = axolotl_trainer(model, tmp_path / str(len(results)))
        assert trainer.model_accepts_loss_kwargs is False
        seen: list[dict] = []
        inner = model.get_base_model() if peft else model
        forward = inner.forward
        inner.forward = lambda *a, _f=forward, _s=seen, **kw: _s.append(dict(kw)) or _f(*a, **kw)
        model.train()
        model.zero_grad(set_to_none=True)
        trainer.current_gradient_accumulation_steps = 2  # set by the training loop in a real run
        # what the training loop passes: the token count of the whole accumulated batch
        loss = trainer.training_step(model, dict(batch), num_items_in_batch=torch.tensor(11))
        inner.forward = forward
        assert seen and all("num_items_in_batch" not in kw for kw in seen)
        grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
        with torch.no_grad():
            own_mean = model(**batch).loss
        # the logged loss is the micro-batch mean over its own 4 trained tokens, / 2 accumulation steps
        assert torch.allclose(loss, own_mean / 2, rtol=1e-5)
        results.append((loss, grads))
    assert_same(*results)
