"""Tiny random models of a real architecture, built in place (no hub, no weights downloaded).

Used by the tests and by the preflight (`./run.sh preflight`): a byte-level BPE
tokenizer trained on the task's own strings, so every Korean string encodes
without unknown tokens, and a randomly initialised Gemma-2 whose architecture
(softcapping, sliding window, alternating layers) is the base model's, scaled down.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


def task_corpus(files: Iterable[Path]) -> list[str]:
    """The strings a tokenizer must encode well: the prompt's fixed text and every item's text."""
    from maerak.prompt import ALPACA_SYSTEM, ALPACA_TURN, INSTRUCTION
    from maerak.schema import LABELS

    texts = [ALPACA_SYSTEM, ALPACA_TURN, INSTRUCTION, "A B C [Conversation] [Question] [Option] 화자1 화자2 근거"]
    for path in files:
        for item in json.loads(Path(path).read_text(encoding="utf-8-sig")):
            inp = item["input"]
            texts += [str(u["utterance"]) for u in inp["conversation"]]
            texts += [str(inp[k]) for k in LABELS]
    return texts


def build_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 2000):
    """A byte-level BPE fast tokenizer with Gemma's special tokens and a <bos> on every encoding."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    bos = tok.token_to_id("<bos>")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", bos)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )


def build_gemma2(tokenizer, arch: dict[str, Any], seed: int = 0, dtype: str = "float32"):
    """A random Gemma2ForCausalLM with the sizes in `arch` (Gemma2Config keys) and the tokenizer's vocabulary."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    config = Gemma2Config(
        **arch,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return Gemma2ForCausalLM(config).to(getattr(torch, dtype))
