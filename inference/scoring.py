"""Letter scoring: one forward per prompt, logits only at the last position.

For every (item, order) the prompt from `maerak.prompt.render_prompt` is scored
once; the logits of the three answer letters at the last prompt position give
probabilities over the letters (softmax over the three logits), which `order`
maps back to the ORIGINAL options. Permutation TTA averages those mapped
probabilities over several orders; ensembles combine checkpoints by mean or vote.

In `options` mode (profiles.yml scoring.mode) a request is one item's context
(`render_context`, no options in it) plus its three option texts as continuations;
the "logits" of a request are then each option's summed token log-probabilities
after the context (the context runs once per item, its KV cache shared by the three
options), and the same softmax gives the option probabilities. Option order plays
no part there, so TTA has nothing to average: options mode scores once.

Pure helpers (`letter_probs`, `to_original`, `average`, `combine`, `argmax_first`)
take numbers and return numbers; `Scorer` is the model edge; `ScoreCache` is the
resume edge (a JSONL file of letter logits keyed by item id + model fingerprint +
order + prompt hash + scoring setup).
"""
from __future__ import annotations

import hashlib
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from maerak.files import append_jsonl, read_keyed_jsonl
from maerak.prompt import (
    IDENTITY,
    MODES,
    ORDER_SETS,
    answer_token_ids,
    fit_prompt,
    render_context,
    render_prompt,
    response_ids,
)
from maerak.schema import LABELS, Item

ENSEMBLE_MODES = ("mean", "vote")


# ---------------------------------------------------------------- pure helpers
def orders_for(tta: str) -> tuple[tuple[int, ...], ...]:
    if tta not in ORDER_SETS:
        raise ValueError(f"unknown tta {tta!r}; expected one of {', '.join(ORDER_SETS)}")
    return ORDER_SETS[tta]


def letter_probs(logits: Sequence[float]) -> list[float]:
    """Softmax over the three letter logits (float64, max-shifted)."""
    top = max(logits)
    exps = [math.exp(x - top) for x in logits]
    total = sum(exps)
    return [e / total for e in exps]


def to_original(letter_p: Sequence[float], order: Sequence[int]) -> list[float]:
    """order[k] is the original option shown at letter k: p_orig[order[k]] = p_letter[k]."""
    out = [0.0, 0.0, 0.0]
    for k, i in enumerate(order):
        out[i] = float(letter_p[k])
    return out


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


def label_of(index: int) -> str:
    return LABELS[index]


# ---------------------------------------------------------------- tokens
def encode_request(tokenizer, req: Request, max_length: int) -> tuple[list[int], bool]:
    """The request's prompt as token ids, at most `max_length` of them, and whether it was cut.
    An over-long prompt leaves out the conversation's oldest turns (maerak.prompt.fit_prompt),
    so BOS, the instruction, the question and the options stay. Only when that is not enough
    (or the request has no item) are the oldest tokens after BOS cut."""
    ids = list(tokenizer(req.prompt, add_special_tokens=True)["input_ids"])
    if req.continuations:  # options mode: the context plus its longest option must fit
        max_length -= max(len(response_ids(tokenizer, c)) for c in req.continuations)
    if len(ids) <= max_length:
        return ids, False
    if req.item is not None:
        render = render_context if req.continuations else None
        prompt, _ = fit_prompt(req.item, req.order, lambda text: len(tokenizer(text)["input_ids"]), max_length, render)
        ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if len(ids) > max_length:
        head = ids[:1] if ids and ids[0] == tokenizer.bos_token_id else []
        ids = head + ids[len(ids) - (max_length - len(head)):]
    return ids, True


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
@dataclass(frozen=True)
class Request:
    item_id: str
    order: tuple[int, ...]
    prompt: str
    item: Item | None = field(default=None, compare=False, repr=False)  # to re-render an over-long prompt
    continuations: tuple[str, ...] = ()  # options mode: the option texts scored after `prompt`

    @property
    def order_key(self) -> str:
        return "".join(str(i) for i in self.order)


class ScoreCache:
    """Append-only JSONL of letter logits. One line per scored (item, order) under
    one model/setup; a torn last line (interrupted write) is ignored on reading."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self.rows: dict[str, list[float]] = {}
        if self.path:
            for k, row in read_keyed_jsonl(self.path).items():
                try:
                    self.rows[k] = [float(x) for x in row["logits"]]
                except (KeyError, TypeError, ValueError):
                    continue

    @staticmethod
    def key(fingerprint: str, req: Request) -> str:
        text = req.prompt + "".join("\0" + c for c in req.continuations)  # letters: the prompt alone, as before
        return f"{req.item_id}|{fingerprint}|{req.order_key}|{prompt_hash(text)}"

    def get(self, fingerprint: str, req: Request) -> list[float] | None:
        return self.rows.get(self.key(fingerprint, req))

    def put_many(self, fingerprint: str, pairs: Iterable[tuple[Request, list[float]]]) -> None:
        rows = []
        for req, logits in pairs:
            k = self.key(fingerprint, req)
            self.rows[k] = list(logits)
            rows.append({"key": k, "id": req.item_id, "model": fingerprint, "order": req.order_key, "logits": list(logits)})
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


def buckets(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Length-sorted batches (longest first, so memory trouble shows at once); stable,
    so the batching depends only on the requests, not on what the cache holds."""
    idx = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]


class Scorer:
    """Loads one checkpoint and returns letter logits at the last prompt position."""

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
        self.letter_ids: list[int] | None = None
        self.fingerprint = hashlib.sha256(
            f"{model_fingerprint(self.model_dir)}|{self.dtype}|{self.max_length}|{self.batch_size}".encode()
        ).hexdigest()[:16]
        self.truncated: list[str] = []
        self.fit_batch: int | None = None  # set when a batch of `batch_size` ran out of GPU memory

    def encode(self, req: Request) -> list[int]:
        if self.letter_ids is None:
            self.letter_ids = answer_token_ids(self.tokenizer)
        ids, cut = encode_request(self.tokenizer, req, self.max_length)
        if cut and req.item_id not in self.truncated:
            self.truncated.append(req.item_id)
        return ids

    def forward_last(self, batch: Sequence[Sequence[int]]):
        """Letter logits (float32 tensor [B, 3]) for left-padded token-id lists."""
        import torch

        width = max(len(x) for x in batch)
        input_ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for r, ids in enumerate(batch):
            input_ids[r, width - len(ids):] = torch.tensor(ids, dtype=torch.long)
            mask[r, width - len(ids):] = 1
        # Positions count real tokens only, so a padded row sees the positions it sees alone.
        position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(input_ids=input_ids.to(self.device), attention_mask=mask.to(self.device),
                             position_ids=position_ids.to(self.device), logits_to_keep=1, use_cache=False)
            return out.logits[:, -1, self.letter_ids].float().cpu()

    def forward_options(self, context: Sequence[int], options: Sequence[Sequence[int]]) -> list[float]:
        """Each option's summed token log-probabilities after `context`. The context runs once;
        its KV cache, repeated per option, serves one right-padded forward of the options."""
        import torch

        n, width, start = len(options), max(len(o) for o in options), len(context)
        ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((n, start + width), dtype=torch.long)
        mask[:, :start] = 1
        for r, opt in enumerate(options):
            ids[r, : len(opt)] = torch.tensor(list(opt), dtype=torch.long)
            mask[r, start : start + len(opt)] = 1
        positions = torch.arange(start, start + width).expand(n, -1)
        with torch.inference_mode():
            head = self.model(input_ids=torch.tensor([list(context)], device=self.device), use_cache=True,
                              logits_to_keep=1)
            cache = head.past_key_values
            cache.batch_repeat_interleave(n)
            out = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                             position_ids=positions.to(self.device), past_key_values=cache, use_cache=True)
            # token j of an option is predicted at the context's last position (j = 0) or at option token j-1
            logp = torch.cat([head.logits[:, -1:].expand(n, -1, -1), out.logits[:, :-1]], dim=1).float().log_softmax(-1)
            taken = logp.gather(-1, ids.to(self.device).unsqueeze(-1)).squeeze(-1).cpu()
        return [float(taken[r, : len(opt)].sum()) for r, opt in enumerate(options)]

    def forward_fitting(self, batch: Sequence[Sequence[int]]):
        """forward_last in pieces that fit: on CUDA out-of-memory the batch is halved (and stays
        halved for the rest of the run), down to one prompt, which must fit."""
        import torch

        parts, start = [], 0
        while start < len(batch):
            chunk = batch[start : start + (self.fit_batch or len(batch))]
            try:
                parts.append(self.forward_last(chunk))
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
        return torch.cat(parts)

    def score(self, requests: Sequence[Request], cache: ScoreCache | None = None,
              on_batch: Callable[[int, int], None] | None = None, progress: bool = False) -> list[list[float]]:
        """Letter logits for every request. Batches whose requests are all cached are skipped;
        each scored batch is appended to the cache before the next one starts."""
        self.truncated = []
        encoded = [self.encode(r) for r in requests]
        options = [[response_ids(self.tokenizer, c) for c in r.continuations] for r in requests]
        results: list[list[float] | None] = [None] * len(requests)
        plan = buckets([len(e) for e in encoded], self.batch_size)
        done = 0
        for b, idx in enumerate(plan):
            cached = [cache.get(self.fingerprint, requests[i]) if cache else None for i in idx]
            if all(c is not None for c in cached):
                for i, c in zip(idx, cached):
                    results[i] = c
            else:
                if requests[idx[0]].continuations:
                    logits = [self.forward_options(encoded[i], options[i]) for i in idx]
                else:
                    logits = self.forward_fitting([encoded[i] for i in idx]).tolist()
                for i, row in zip(idx, logits):
                    results[i] = [float(x) for x in row]
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
def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; expected one of {', '.join(MODES)}")
    return mode


def build_requests(items: Sequence[Item], orders: Sequence[Sequence[int]], mode: str = "letters") -> list[Request]:
    """letters: one request per item and order; options: one per item (its context and three options)."""
    if check_mode(mode) == "options":
        return [Request(it.id, IDENTITY, render_context(it), it, tuple(it.options)) for it in items]
    return [Request(it.id, tuple(o), render_prompt(it, o), it) for it in items for o in orders]


def item_probs(items: Sequence[Item], requests: Sequence[Request], logits: Sequence[Sequence[float]]
               ) -> dict[str, list[float]]:
    """Per item: probabilities over the ORIGINAL options, averaged over its orders."""
    rows: dict[str, list[list[float]]] = {it.id: [] for it in items}
    for req, lg in zip(requests, logits):
        rows[req.item_id].append(to_original(letter_probs(lg), req.order))
    return {iid: average(r) for iid, r in rows.items()}


def score_items(scorer, items: Sequence[Item], tta: str = "none", cache: ScoreCache | None = None,
                on_batch: Callable[[int, int], None] | None = None, progress: bool = False, mode: str = "letters"
                ) -> dict[str, list[float]]:
    requests = build_requests(items, orders_for(tta), mode)
    logits = scorer.score(requests, cache=cache, on_batch=on_batch, progress=progress)
    return item_probs(items, requests, logits)
