"""The scoring primitive: the log-likelihood of a continuation after a context (as
lm-evaluation-harness has it), batched, cached, and fitted to the GPU.

A `maerak.modes.Request` is one context and the continuations scored after it (three: one per
option). The mode (maerak/modes.py) decides what the context and continuations are, how their
text becomes tokens, and how the three log-likelihoods become option probabilities; nothing
here knows a mode by name.

The log-likelihood of a continuation is the sum over its tokens of log p(token | everything
before it): each token's logit minus the log-sum-exp of all logits at its position (float32 on
the model's side, the subtraction and the sum in float64). The requests' contexts share long
prefixes (the alpaca preamble; a conversation, for all its items; an item's question, for all
its option orders), so the scorer reads them as a token trie (`prefix_tree`): each node's tokens
run once, batch 1 and unpadded, on its parent's KV cache, and the last position of a context
predicts every continuation's first token. Only continuations longer than one token need a
second forward, which reads their other tokens on the context's cache (repeated per
continuation, right-padded, in pieces of `batch_size`; on CUDA out-of-memory the piece is
halved, `Scorer.forward_fitting`). Nothing is padded between a prefix and what follows it, so
sliding-window layers see what a full forward of the whole context would.

Pure helpers (`average`, `combine`, `argmax_first`) take numbers and return numbers; `Scorer`
is the model edge; `ScoreCache` is the resume edge (a JSONL file of log-likelihoods keyed by
item id + model fingerprint + mode key + order + hash of context and continuations).
"""
from __future__ import annotations

import copy
import hashlib
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from maerak.files import append_jsonl, read_keyed_jsonl
from maerak.modes import Mode, Request
from maerak.prompt import fit_prompt
from maerak.schema import Item

ENSEMBLE_MODES = ("mean", "vote")
# How the transformers scorer splits a context into forwards, in its fingerprint: numbers computed
# another way differ in the last bits, so a cache from another scheme is not reused.
SCHEME = "prefix-tree1"


# ---------------------------------------------------------------- pure helpers
def average(rows: Sequence[Sequence[float]]) -> list[float]:
    n = len(rows)
    return [sum(r[i] for r in rows) / n for i in range(3)]


def argmax_first(values: Sequence[float]) -> int:
    """Index of the largest value; ties go to the LOWEST index (deterministic)."""
    best = 0
    for i in range(1, len(values)):
        if values[i] > values[best]:
            best = i
    return best


def combine(per_model: Sequence[Sequence[float]], mode: str = "mean") -> tuple[int, list[float]]:
    """Combine per-model option probabilities into (chosen option index, combined probs).

    mean: average the probabilities, argmax; exact ties -> lowest option index.
    vote: each model votes for its argmax (its own ties -> lowest index); the option
      with most votes wins; a tie in votes is broken by the higher mean probability
      among the tied options, then by the lowest option index.
    The returned probabilities are the mean probabilities in both modes.
    """
    if mode not in ENSEMBLE_MODES:
        raise ValueError(f"unknown ensemble mode {mode!r}; expected mean or vote")
    mean = average(per_model)
    if mode == "mean":
        return argmax_first(mean), mean
    votes = [0, 0, 0]
    for probs in per_model:
        votes[argmax_first(probs)] += 1
    top = max(votes)
    tied = [i for i in range(3) if votes[i] == top]
    best = tied[0]
    for i in tied[1:]:
        if mean[i] > mean[best]:
            best = i
    return best, mean


# ---------------------------------------------------------------- tokens
@dataclass(frozen=True)
class Encoded:
    """A request as token ids: the context (with BOS) and each continuation's tokens."""

    context: tuple[int, ...]
    continuations: tuple[tuple[int, ...], ...]


def encode_request(tokenizer, req: Request, max_length: int) -> tuple[Encoded, bool]:
    """The request as token ids, and whether its context was cut. The model reads the context and
    each continuation but its last token (that one is only predicted), so the context may take
    `max_length` minus (longest continuation - 1) tokens, as lm-evaluation-harness cuts. An
    over-long context leaves out the conversation's oldest turns (maerak.prompt.fit_prompt), so
    BOS, the instruction, the question and the options stay. Only when that is not enough (or
    the request has no item) are the oldest tokens after BOS cut."""
    continuations = tuple(tuple(req.mode.continuation_ids(tokenizer, c)) for c in req.continuations)
    room = max_length - (max(len(c) for c in continuations) - 1)
    ids = list(tokenizer(req.context, add_special_tokens=True)["input_ids"])
    if len(ids) <= room:
        return Encoded(tuple(ids), continuations), False
    if req.item is not None:
        context, _ = fit_prompt(req.item, req.order, lambda text: len(tokenizer(text)["input_ids"]), room,
                                lambda _item, skip: req.render(skip))
        ids = list(tokenizer(context, add_special_tokens=True)["input_ids"])
    if len(ids) > room:
        head = ids[:1] if ids and ids[0] == tokenizer.bos_token_id else []
        ids = head + ids[len(ids) - (room - len(head)):]
    return Encoded(tuple(ids), continuations), True


# ---------------------------------------------------------------- fingerprints
def model_fingerprint(model_dir: str | Path) -> str:
    """A cheap, content-based id of a checkpoint: full sha256 of config/tokenizer files,
    and for weight files their size plus sha256 of the first, middle and last MiB.
    (Hashing 18 GB of gemma-2-9b weights on every submit would take minutes.)"""
    root = Path(model_dir)
    h = hashlib.sha256()
    chunk = 1 << 20
    for p in sorted(x for x in root.rglob("*") if x.is_file() and not x.name.startswith(".")):
        rel = str(p.relative_to(root))
        size = p.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        if p.suffix in (".json", ".model", ".txt", ".jinja") or size <= 3 * chunk:
            h.update(p.read_bytes())
        else:
            with open(p, "rb") as fh:
                for offset in (0, size // 2, size - chunk):
                    fh.seek(offset)
                    h.update(fh.read(chunk))
    return h.hexdigest()[:16]


def prompt_hash(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:12]


# ---------------------------------------------------------------- cache
class ScoreCache:
    """Append-only JSONL of log-likelihoods. One line per scored request under one model/setup;
    a torn last line (interrupted write) is ignored on reading."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.rows: dict[str, list[float]] = {}
        if self.path:
            for k, row in read_keyed_jsonl(self.path).items():
                try:
                    self.rows[k] = [float(x) for x in row["loglikelihoods"]]
                except (KeyError, TypeError, ValueError):
                    continue

    @staticmethod
    def key(fingerprint: str, req: Request) -> str:
        text = req.context + "".join("\0" + c for c in req.continuations)
        return f"{req.item_id}|{fingerprint}|{req.mode.key}|{req.order_key}|{prompt_hash(text)}"

    def get(self, fingerprint: str, req: Request) -> list[float] | None:
        return self.rows.get(self.key(fingerprint, req))

    def put_many(self, fingerprint: str, pairs: Iterable[tuple[Request, list[float]]]) -> None:
        rows = []
        for req, lls in pairs:
            k = self.key(fingerprint, req)
            self.rows[k] = list(lls)
            rows.append({"key": k, "id": req.item_id, "model": fingerprint, "mode": req.mode.key,
                         "order": req.order_key, "loglikelihoods": list(lls)})
        if self.path:
            append_jsonl(self.path, rows)


# ---------------------------------------------------------------- model edge
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


class Scorer:
    """Loads one checkpoint (transformers) and returns each request's continuation log-likelihoods."""

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
        self.fingerprint = hashlib.sha256(
            f"{model_fingerprint(self.model_dir)}|{self.dtype}|{self.max_length}|{self.batch_size}|{SCHEME}".encode()
        ).hexdigest()[:16]
        self.truncated: list[str] = []
        self.fit_batch: int | None = None  # set when a batch of `batch_size` ran out of GPU memory

    def encode(self, req: Request) -> Encoded:
        enc, cut = encode_request(self.tokenizer, req, self.max_length)
        if cut and req.item_id not in self.truncated:
            self.truncated.append(req.item_id)
        return enc

    def extend(self, tokens: Sequence[int], past):
        """One tree node: `tokens` read after `past` (a KV cache, or None at the root), batch 1 and
        unpadded, so every layer, a sliding-window one too, sees exactly what a full forward of the
        whole context would. Returns the cache after them and the log-softmax inputs at their last
        position (which predicts every continuation's first token): the float32 logits and their
        log-sum-exp."""
        import torch

        ids = torch.tensor([list(tokens)], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            out = self.model(input_ids=ids, past_key_values=past, use_cache=True, logits_to_keep=1)
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
        """forward in pieces of at most `batch_size` rows that fit: on CUDA out-of-memory the piece
        is halved (and stays halved for the rest of the run), down to one row, which must fit."""
        import torch

        parts: list[float] = []
        start = 0
        while start < len(rows):
            chunk = rows[start : start + (self.fit_batch or self.batch_size)]
            try:
                parts += self.forward(cache, chunk)
            except torch.OutOfMemoryError:
                if len(chunk) == 1:
                    raise
                self.fit_batch = max(1, len(chunk) // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                print(f"\nwarning: out of GPU memory at batch size {len(chunk)}; scoring in batches of {self.fit_batch}",
                      file=sys.stderr)
                continue
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

    def score(self, requests: Sequence[Request], cache: ScoreCache | None = None,
              on_batch: Callable[[int, int], None] | None = None, progress: bool = False) -> list[list[float]]:
        """Continuation log-likelihoods for every request, each shared context prefix read once
        (`prefix_tree`). The work comes in units, the subtrees below the prefix every request
        shares (in practice one conversation each, with all its items and option orders); a unit
        whose requests are all cached is skipped, and each scored unit is appended to the cache
        before the next starts. The units depend only on the requests, not on what the cache
        holds, so a resumed run computes every number exactly as an uninterrupted one."""
        self.truncated = []
        encoded = [self.encode(r) for r in requests]
        root = prefix_tree([e.context for e in encoded])
        units = root.children if root.children and not root.ends else [root]
        shared = None  # the root's cache, computed when the first unit below it needs scoring
        results: list[list[float] | None] = [None] * len(requests)
        done = 0
        for b, unit in enumerate(units):
            idx = unit.requests()
            cached = [cache.get(self.fingerprint, requests[i]) if cache else None for i in idx]
            if all(c is not None for c in cached):
                for i, c in zip(idx, cached):
                    results[i] = c
            else:
                if unit is root or not root.tokens:
                    scored = self.walk(unit, None, encoded)
                else:
                    if shared is None:
                        shared = self.extend(root.tokens, None)[0]
                    scored = self.walk(unit, copy.deepcopy(shared), encoded)
                for i in idx:
                    results[i] = scored[i]
                if cache is not None:
                    cache.put_many(self.fingerprint, [(requests[i], results[i]) for i in idx])
            done += len(idx)
            if progress:
                print(f"\r  scored {done}/{len(requests)}", end="", file=sys.stderr, flush=True)
            if on_batch is not None:
                on_batch(b, done)
        if progress:
            print(file=sys.stderr)
        return [r for r in results]  # type: ignore[misc]

    def close(self) -> None:
        import gc

        del self.model
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


# ---------------------------------------------------------------- items -> probabilities
def item_probs(items: Sequence[Item], requests: Sequence[Request], loglikelihoods: Sequence[Sequence[float]]
               ) -> dict[str, list[float]]:
    """Per item: probabilities over the ORIGINAL options (each request's mode maps them), averaged
    over its orders."""
    rows: dict[str, list[list[float]]] = {it.id: [] for it in items}
    for req, lls in zip(requests, loglikelihoods):
        rows[req.item_id].append(req.mode.probabilities(req, lls))
    return {iid: average(r) for iid, r in rows.items()}


def score_items(scorer, items: Sequence[Item], mode: Mode, tta: str = "none", cache: ScoreCache | None = None,
                on_batch: Callable[[int, int], None] | None = None, progress: bool = False) -> dict[str, list[float]]:
    requests = mode.requests(items, mode.orders(tta))
    lls = scorer.score(requests, cache=cache, on_batch=on_batch, progress=progress)
    return item_probs(items, requests, lls)
