"""The one caching layer over the scoring primitive, for every backend (as lm-evaluation-harness's
CachingLM wraps any LM).

A backend (inference/scoring.py `Scorer`, transformers; inference/vllm_backend.py `VllmScorer`)
implements only the primitive: `units` groups the encoded requests into the pieces it computes
together, `unit_loglikelihoods` computes one piece, and `identity` names the numbers it computes
(checkpoint content, dtype, lengths, batch). `Backend.score` does the rest, once: tokenizing,
cache lookups, appending each computed unit to the cache before the next starts (an interrupted
run resumes), progress and `on_batch`.

`ScoreCache` is an append-only JSONL file of log-likelihoods keyed by item id + backend identity
+ mode key + order + hash of context and continuations.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.tokens import Encoded, encode_request
from maerak import fingerprint as fp
from maerak.files import append_jsonl, read_keyed_jsonl
from maerak.modes import Request, check_finite
from maerak.progress import bar


def prompt_hash(prompt: str) -> str:
    return hashlib.sha1(prompt.encode("utf-8")).hexdigest()[:12]


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
            check_finite(req, lls)  # a NaN is never cached as a score
            k = self.key(fingerprint, req)
            self.rows[k] = list(lls)
            rows.append({"key": k, "id": req.item_id, "model": fingerprint, "mode": req.mode.key,
                         "order": req.order_key, "loglikelihoods": list(lls)})
        if self.path:
            append_jsonl(self.path, rows)


@dataclass(frozen=True)
class Unit:
    """Requests a backend computes together (their indices), and what it needs to (e.g. a tree node)."""

    requests: tuple[int, ...]
    work: Any = None


def identity(model_dir: str | Path) -> str:
    """The checkpoint's content (maerak/fingerprint.py): every file's sha256."""
    return fp.model_digest(model_dir)


def identity_of(model_id: str, *settings: object) -> str:
    """A backend's cache identity: the checkpoint's content and every setting that changes its numbers."""
    text = "|".join([model_id, *map(str, settings)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Backend:
    """A scorer: subclasses set `tokenizer`, `max_length` and implement the primitive."""

    tokenizer: Any
    max_length: int
    truncated: list[str]

    @property
    def fingerprint(self) -> str:
        """The identity of the numbers the backend computes now (read at each lookup and write)."""
        raise NotImplementedError

    def units(self, encoded: Sequence[Encoded], todo: Sequence[int]) -> list[Unit]:
        """The pieces to compute, in order, covering at least `todo` (the requests not cached)."""
        raise NotImplementedError

    def unit_loglikelihoods(self, encoded: Sequence[Encoded], unit: Unit) -> list[list[float]]:
        """Each continuation's log-likelihood after its context, for the unit's requests, in its order."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def encode(self, req: Request) -> Encoded:
        enc, cut = encode_request(self.tokenizer, req, self.max_length)
        if cut and req.item_id not in self.truncated:
            self.truncated.append(req.item_id)
        return enc

    def score(self, requests: Sequence[Request], cache: ScoreCache | None = None,
              on_batch: Callable[[int, int], None] | None = None, progress: bool = False) -> list[list[float]]:
        """Continuation log-likelihoods for every request, in request order. A unit whose requests are
        all cached is not computed; each computed unit is appended to the cache before the next."""
        self.truncated = []
        encoded = [self.encode(r) for r in requests]
        results: list[list[float] | None] = [cache.get(self.fingerprint, r) if cache else None for r in requests]
        units = self.units(encoded, [i for i, r in enumerate(results) if r is None])
        total = sum(len(u.requests) for u in units)
        done = 0
        shown = bar(total=total, desc="score", unit="req", enabled=progress)
        for b, unit in enumerate(units):
            if any(results[i] is None for i in unit.requests):
                rows = self.unit_loglikelihoods(encoded, unit)
                for i, row in zip(unit.requests, rows):
                    results[i] = row
                if cache is not None:  # identity read after computing: an OOM may have changed the batch
                    cache.put_many(self.fingerprint, [(requests[i], results[i]) for i in unit.requests])
            done += len(unit.requests)
            shown.update(len(unit.requests))
            if on_batch is not None:
                on_batch(b, done)
        shown.close()
        return [r for r in results]  # type: ignore[misc]
