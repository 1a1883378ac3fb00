"""The transformers backend of the scoring primitive: the log-likelihood of a continuation after a
context (as lm-evaluation-harness has it), read through a token prefix tree and fitted to the GPU.
Cache lookups, writes and progress are inference/caching.py's (`Backend.score`), shared with the
vLLM backend; tokens and truncation are inference/tokens.py's; probabilities and ensembles
inference/ensemble.py's.

The log-likelihood of a continuation is the sum over its tokens of log p(token | everything
before it): each token's logit minus the log-sum-exp of all logits at its position (float32 on
the model's side, the subtraction and the sum in float64). The requests' contexts share long
prefixes (the alpaca preamble; a conversation, for all its items; an item's question, for all
its option orders), so the scorer reads them as a token trie (`prefix_tree`): each node's tokens
run once, batch 1 and unpadded, on its parent's KV cache, and the last position of a context
predicts every continuation's first token. Only continuations longer than one token need a
second forward, which reads their other tokens on the context's cache (repeated per
continuation, right-padded, in pieces of `batch_size`). Nothing is padded between a prefix and
what follows it, so sliding-window layers see what a full forward of the whole context would.

Out of GPU memory: in the continuation rows, the piece is halved and the whole unit is computed
again at the smaller size, which is then part of the cache identity (`fingerprint`): batches of
other sizes may differ in the last bits on a GPU, so a number is cached under the batch it was
computed with. In a tree node (batch 1, nothing to halve) the read is retried once after freeing
the allocator's cache (the same computation, the same numbers), then stops with one line.
"""
from __future__ import annotations

import copy
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from inference.caching import Backend, Unit, identity, identity_of
from inference.tokens import Encoded
from maerak.errors import MaerakError

# How the transformers scorer splits a context into forwards, in its identity: numbers computed
# another way differ in the last bits, so a cache from another scheme is not reused.
SCHEME = "prefix-tree1"


class BatchReduced(Exception):
    """A continuation piece ran out of GPU memory and `fit_batch` was lowered: redo the unit."""


def resolve_dtype(name: str, device: str):
    import torch

    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise ValueError(f"unknown dtype {name!r}; expected float32, bfloat16 or float16")
    dtype = table[name]
    if device.startswith("cuda") and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        dtype = torch.float16  # pre-Ampere GPUs
    return dtype


@dataclass
class Node:
    """A run of context tokens shared by every request below it: `ends` are the requests whose
    context stops after these tokens, `children` the runs that follow (each starts with another
    token). Reading the tree depth first reads every shared prefix once."""

    tokens: tuple[int, ...]
    ends: list[int]
    children: list[Node]

    def requests(self) -> list[int]:
        return self.ends + [i for c in self.children for i in c.requests()]


def prefix_tree(contexts: Sequence[Sequence[int]], idx: Sequence[int] | None = None, start: int = 0) -> Node:
    """The token trie of `contexts` (a radix tree: a node per run of tokens with no branch inside),
    children ordered by their first token, so the tree depends only on the contexts. Each
    context must be non-empty (BOS at least), and a node never has zero tokens except a root whose
    contexts share no first token."""
    idx = list(range(len(contexts))) if idx is None else list(idx)
    if any(not contexts[i] for i in idx):
        raise ValueError("an empty context has no position to predict its continuations from")
    end = start
    while all(len(contexts[i]) > end for i in idx) and len({contexts[i][end] for i in idx}) == 1:
        end += 1
    ends = [i for i in idx if len(contexts[i]) == end]
    following: dict[int, list[int]] = {}
    for i in idx:
        if len(contexts[i]) > end:
            following.setdefault(contexts[i][end], []).append(i)
    children = [prefix_tree(contexts, following[t], end) for t in sorted(following)]
    return Node(tuple(contexts[idx[0]][start:end]), ends, children)


class Scorer(Backend):
    """Loads one checkpoint (transformers) and returns each request's continuation log-likelihoods.
    Keep the `dtype` argument: the profile's scoring.dtype and its CPU choice come in through it."""

    def __init__(self, model_dir: str | Path, dtype: str = "float32", batch_size: int = 4,
                 max_length: int = 1024, device: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_dir = Path(model_dir)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype_name = dtype
        self.dtype = resolve_dtype(dtype, self.device)
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        kwargs = {"dtype": self.dtype}
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.model_dir)
        # Gemma-2 soft-caps attention logits; only the eager kernel applies the cap.
        if getattr(config, "attn_logit_softcapping", None):
            kwargs["attn_implementation"] = "eager"
        self.model = AutoModelForCausalLM.from_pretrained(self.model_dir, **kwargs).to(self.device).eval()
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        self.model_id = identity(self.model_dir)  # the checkpoint's content, hashed once per scorer
        self.truncated: list[str] = []
        self.fit_batch: int | None = None  # set when a batch of `batch_size` ran out of GPU memory
        self._shared = None  # the KV cache of the prefix every request shares, for the current `units`

    @property
    def fingerprint(self) -> str:
        """Checkpoint content, dtype, length, the batch the continuation rows run in now, the scheme."""
        return identity_of(self.model_id, self.dtype, self.max_length, self.fit_batch or self.batch_size, SCHEME)

    def extend(self, tokens: Sequence[int], past):
        """One tree node: `tokens` read after `past` (a KV cache, or None at the root), batch 1 and
        unpadded, so every layer, a sliding-window one too, sees exactly what a full forward of the
        whole context would. Returns the cache after them and the log-softmax inputs at their last
        position (which predicts every continuation's first token): the float32 logits and their
        log-sum-exp."""
        import torch

        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        for attempt in (1, 2):
            try:
                with torch.inference_mode():
                    out = self.model(input_ids=ids, past_key_values=past, use_cache=True, logits_to_keep=1)
                break
            except torch.OutOfMemoryError:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if attempt == 2:
                    held = past.get_seq_length() if past is not None else 0
                    raise MaerakError(
                        f"{self.model_dir}: out of GPU memory reading {len(tokens)} context tokens after {held} "
                        f"(batch 1, nothing to halve); lower scoring.max_length or use a larger GPU") from None
        last = out.logits[0, -1].float()
        return out.past_key_values, last, float(last.logsumexp(-1))

    def forward(self, cache, rows: Sequence[Sequence[int]]) -> list[float]:
        """For continuations longer than one token: each row's summed log-likelihood of its tokens
        after the first, read on (a copy of) `cache`, the context's KV cache, repeated per row and
        right-padded (padding only after real tokens, so no layer's window shifts)."""
        import torch

        width, length = max(len(c) - 1 for c in rows), cache.get_seq_length()
        n = len(rows)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        targets = torch.zeros((n, width), dtype=torch.long)
        mask = torch.zeros((n, length + width), dtype=torch.long)
        mask[:, :length] = 1
        for k, c in enumerate(rows):
            ids[k, : len(c) - 1] = torch.tensor(list(c[:-1]), dtype=torch.long)
            targets[k, : len(c) - 1] = torch.tensor(list(c[1:]), dtype=torch.long)
            mask[k, length : length + len(c) - 1] = 1
        repeated = copy.deepcopy(cache)
        repeated.batch_select_indices(torch.zeros(n, dtype=torch.long, device=self.device))
        positions = (length + torch.arange(width)).expand(n, width)
        with torch.inference_mode():
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                             position_ids=positions.to(self.device), past_key_values=repeated, use_cache=True)
            logits = out.logits.float()  # continuation token j + 1 is predicted at token j
            taken = logits.gather(-1, targets.to(self.device).unsqueeze(-1)).squeeze(-1).cpu().tolist()
            lse = logits.logsumexp(-1).cpu().tolist()
        return [sum(taken[k][j] - lse[k][j] for j in range(len(c) - 1)) for k, c in enumerate(rows)]

    def forward_fitting(self, cache, rows: Sequence[Sequence[int]]) -> list[float]:
        """forward in pieces of at most `batch_size` rows: on CUDA out-of-memory the batch is halved
        (and stays halved for the rest of the run) and BatchReduced asks for the unit again, so all
        of a unit's numbers come from one batch size, the one in `fingerprint`; one row must fit."""
        import torch

        parts: list[float] = []
        start = 0
        while start < len(rows):
            chunk = rows[start : start + (self.fit_batch or self.batch_size)]
            try:
                parts += self.forward(cache, chunk)
            except torch.OutOfMemoryError:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if len(chunk) == 1:
                    raise MaerakError(f"{self.model_dir}: out of GPU memory scoring one continuation row on a "
                                      f"{cache.get_seq_length()}-token context; lower scoring.max_length "
                                      "or use a larger GPU") from None
                self.fit_batch = max(1, len(chunk) // 2)
                print(f"\nwarning: out of GPU memory at batch size {len(chunk)}; scoring in batches of {self.fit_batch}",
                      file=sys.stderr)
                raise BatchReduced from None
            start += len(chunk)
        return parts

    def walk(self, node: Node, past, encoded: Sequence[Encoded]) -> dict[int, list[float]]:
        """Log-likelihoods of the requests in `node`'s subtree, its tokens read once after `past`."""
        cache, last, lse = self.extend(node.tokens, past)
        results: dict[int, list[float]] = {}
        for i in node.ends:
            conts = encoded[i].continuations
            row = [float(last[c[0]]) - lse for c in conts]
            longer = [k for k, c in enumerate(conts) if len(c) > 1]
            if longer:
                for k, rest in zip(longer, self.forward_fitting(cache, [conts[k] for k in longer])):
                    row[k] += rest
            results[i] = row
        for k, child in enumerate(node.children):
            # the last child may extend the cache itself; the others read a copy (DynamicCache
            # replaces its tensors on update, but its layers count what they hold)
            results.update(self.walk(child, cache if k == len(node.children) - 1 else copy.deepcopy(cache), encoded))
        return results

    def units(self, encoded: Sequence[Encoded], todo: Sequence[int]) -> list[Unit]:
        """The subtrees below the prefix every request shares (in practice one conversation each,
        with all its items and option orders). They depend only on the requests, not on what the
        cache holds, so a resumed run computes every number exactly as an uninterrupted one."""
        root = prefix_tree([e.context for e in encoded])
        self._shared = None
        nodes = root.children if root.children and not root.ends else [root]
        return [Unit(tuple(n.requests()), (root, n)) for n in nodes]

    def unit_loglikelihoods(self, encoded: Sequence[Encoded], unit: Unit) -> list[list[float]]:
        root, node = unit.work
        while True:
            try:
                if node is root or not root.tokens:
                    scored = self.walk(node, None, encoded)
                else:
                    if self._shared is None:  # computed when the first unit below it needs scoring
                        self._shared = self.extend(root.tokens, None)[0]
                    scored = self.walk(node, copy.deepcopy(self._shared), encoded)
                return [scored[i] for i in unit.requests]
            except BatchReduced:
                continue

    def close(self) -> None:
        import gc

        del self.model
        self._shared = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


