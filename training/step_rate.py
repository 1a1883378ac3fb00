"""The seconds one training step and one scoring forward take on this CPU, for the run's budget
line (maerak/budget.py): the base model on one prepared row, tokenized as Axolotl's alpaca strategy
does, with the stage's answer-position plugin and optimizer. A stage module: it runs the model."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def measure(model_dir: Path, row: dict[str, Any], cfg: dict[str, Any], dtype: str, score_dtype: str) -> tuple[float, float]:
    """Seconds of one training step on `row` (tokenized as Axolotl's alpaca strategy does, as the
    stage trains) in `dtype`, and of one inference forward of it in `score_dtype`."""
    import torch
    from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
    from axolotl.prompters import AlpacaPrompter
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    strategy = AlpacaPromptTokenizingStrategy(AlpacaPrompter("instruct"), tokenizer, False, int(cfg.get("sequence_len") or 1024))
    tok = strategy.tokenize_prompt(row)
    batch = {k: torch.tensor([tok[k]]) for k in ("input_ids", "attention_mask", "labels")}
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.train()
    if any("answer_loss" in str(p) for p in cfg.get("plugins") or []):
        from training.answer_loss import enable

        enable(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, fused="fused" in str(cfg.get("optimizer") or ""))
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def step() -> float:
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    step()  # warm-up
    train_s = step()
    model.eval()
    if score_dtype == "bfloat16":
        model.to(torch.bfloat16)  # the scorer loads the weights in its dtype (inference/scoring.py)

    def forward() -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            model(input_ids=batch["input_ids"], logits_to_keep=1)
        return time.perf_counter() - start

    forward()
    return train_s, forward()
