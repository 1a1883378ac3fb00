"""The vLLM backend on CPU (inference/vllm_backend.py) against the transformers path.

vLLM lives in .venv-vllm (`make setup VLLM=1`); `make test` runs this file there with
MAERAK_REQUIRE_VLLM=1, which turns a missing vllm into a failure instead of a skip.
One engine per model per module: a CPU engine start takes ~10-20 s for the tiny model.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

if os.environ.get("MAERAK_REQUIRE_VLLM") == "1":
    import vllm  # noqa: F401
else:
    pytest.importorskip("vllm", reason="vLLM lives in .venv-vllm (make setup VLLM=1); `make test` runs this file there")

from inference.backends import make_scorer
from inference.caching import ScoreCache
from inference.ensemble import item_probs
from inference.scoring import Scorer
from inference.vllm_backend import prefix_order
from maerak.modes import LETTERS_MODE, OPTIONS_MODE
from maerak.prompt import IDENTITY
from maerak.schema import load_items
from preprocessing import distill

ROOT = Path(__file__).resolve().parent.parent
EMBEDDED = ROOT / "models" / "gemma-3-270m"
OPTIONS_TOL = 1e-3


def sample_items(*splits: str):
    items = []
    for split in splits:
        items += load_items(ROOT / "data" / "sample" / f"{split}.json")[0]
    return items


def assert_same_answers(items, requests, ref_logits, got_logits, prob_tol: float) -> float:
    """Same chosen option per item, option probabilities within prob_tol; returns the max difference."""
    ref = item_probs(items, requests, ref_logits)
    got = item_probs(items, requests, got_logits)
    worst = 0.0
    for it in items:
        r, g = ref[it.id], got[it.id]
        assert max(range(3), key=r.__getitem__) == max(range(3), key=g.__getitem__), (it.id, r, g)
        worst = max(worst, max(abs(a - b) for a, b in zip(r, g)))
    assert worst <= prob_tol
    return worst


# ---------------------------------------------------------------- tiny model (default suite)
@pytest.fixture(scope="module")
def vllm_tiny_dir(tmp_path_factory) -> Path:
    from conftest import save_tiny_checkpoint

    # vLLM's CPU attention kernels have no head_dim 16 ("Unsupported CPU attention configuration").
    return save_tiny_checkpoint(tmp_path_factory.mktemp("vllm-tiny") / "model", head_dim=64)


@pytest.fixture(scope="module")
def vllm_scorer(vllm_tiny_dir):
    scorer = make_scorer(vllm_tiny_dir, backend="vllm", dtype="float32", batch_size=4, max_length=1024,
                         tensor_parallel_size=1, enforce_eager=True)
    yield scorer
    scorer.close()


def letters(tta: str, items):
    return LETTERS_MODE.requests(items, LETTERS_MODE.orders(tta))


def test_vllm_letter_loglikelihoods_equal_transformers_on_dev_and_test_with_tta(vllm_tiny_dir, vllm_scorer):
    items = sample_items("dev", "test")
    requests = letters("all", items)
    ref = Scorer(vllm_tiny_dir, dtype="float32", batch_size=4, max_length=1024).score(requests)
    got = vllm_scorer.score(requests)
    # Log-probabilities over the whole vocabulary, the numbers both backends cache (fp32 on both
    # sides; only the kernels' summation order differs).
    assert max(abs(a - b) for r, g in zip(ref, got) for a, b in zip(r, g)) < 1e-4
    assert_same_answers(items, requests, ref, got, prob_tol=1e-4)


def test_vllm_option_loglikelihoods_equal_transformers_on_dev_and_test(vllm_tiny_dir, vllm_scorer):
    """Options mode through the same primitive: each option's summed token log-probabilities
    (vLLM: prompt log-probs of context + option; transformers: the context's KV cache)."""
    items = sample_items("dev", "test")
    requests = OPTIONS_MODE.requests(items, [IDENTITY])
    ref = Scorer(vllm_tiny_dir, dtype="float32", batch_size=4, max_length=1024).score(requests)
    got = vllm_scorer.score(requests)
    assert any(len(c) > 1 for r in requests for c in vllm_scorer.encode(r).continuations)
    # sums of ~10-30 token log-probs each: float32 rounding adds up
    assert max(abs(a - b) for r, g in zip(ref, got) for a, b in zip(r, g)) < OPTIONS_TOL
    assert_same_answers(items, requests, ref, got, prob_tol=1e-3)


def test_vllm_scores_resume_from_the_cache_and_keep_request_order(vllm_scorer, tmp_path):
    items = sample_items("dev")[:4]
    requests = letters("cyclic", items)
    cache = ScoreCache(tmp_path / "c.jsonl")
    first = vllm_scorer.score(requests[:5], cache=cache)
    reread = ScoreCache(tmp_path / "c.jsonl")
    assert all(reread.get(vllm_scorer.fingerprint, r) == row for r, row in zip(requests[:5], first))
    seen = []
    full = vllm_scorer.score(requests, cache=reread, on_batch=lambda b, done: seen.append(done))
    assert full[:5] == first and seen == [len(requests) - 5]  # only the 7 missing ones were scored
    # results come back in request order although they were scored in prefix order
    alone = vllm_scorer.score([requests[7]])
    assert alone[0] == pytest.approx(full[7], abs=1e-5)


def test_prefix_order_groups_prompts_that_share_a_prefix():
    prompts = [[1, 5, 9], [2, 1], [1, 5, 3], [2, 1, 0], [1, 4]]
    assert prefix_order(prompts) == [4, 2, 0, 1, 3]
    items = sample_items("dev")[:6]
    reqs = letters("all", items)
    order = prefix_order([list(r.context.encode()) for r in reqs])
    # each item's 6 option orders are neighbours, and items of one conversation follow each other
    ids = [reqs[i].item_id for i in order]
    assert all(len(set(ids[k:k + 6])) == 1 for k in range(0, len(ids), 6))


def test_vllm_distillation_is_cached_like_the_transformers_path(vllm_tiny_dir, tmp_path):
    items = sample_items("train")[:3]
    teacher = distill.load_teacher(vllm_tiny_dir, max_new_tokens=4, backend="vllm", enforce_eager=True)
    assert "|vllm|" in teacher.name
    cache = tmp_path / "distill.jsonl"
    out, stats = distill.distill(items, teacher, cache, batch_size=2, progress=False)
    assert stats["generated"] == 3 and stats["teacher_calls"] == 2 and set(out) == {it.id for it in items}

    class Counting:
        name, calls = teacher.name, 0

        def generate(self, prompts):
            Counting.calls += 1
            return teacher.generate(prompts)

    again, stats2 = distill.distill(items, Counting(), cache, progress=False)
    assert Counting.calls == 0 and stats2["cached"] == 3 and again == out


def test_profile_vllm_settings_reach_the_scorer_and_not_transformers(vllm_tiny_dir):
    from maerak.profiles import get_profile

    assert get_profile("competition").vllm["tensor_parallel_size"] >= 1
    scorer = make_scorer(vllm_tiny_dir, backend="transformers", dtype="float32", tensor_parallel_size=2)
    assert isinstance(scorer, Scorer)


# ---------------------------------------------------------------- embedded model (make test-e2e)
@pytest.mark.e2e
@pytest.mark.skipif(not (EMBEDDED / "config.json").exists(), reason="no embedded model: ./run.sh model")
def test_vllm_matches_transformers_on_the_embedded_model_over_sample_dev_and_test():
    items = sample_items("dev", "test")
    requests = letters("none", items)
    ref = Scorer(EMBEDDED, dtype="float32", batch_size=8, max_length=1024).score(requests)
    scorer = make_scorer(EMBEDDED, backend="vllm", dtype="float32", batch_size=8, max_length=1024)
    try:
        got = scorer.score(requests)
    finally:
        scorer.close()
    # fp32 on both sides: measured max |dp| 1e-5 scale; 1e-3 leaves room for other CPUs' kernels.
    assert_same_answers(items, requests, ref, got, prob_tol=1e-3)

