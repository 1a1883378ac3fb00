"""The scoring primitive in letters mode: permutation mapping, batching, ensembles, cache/resume (tiny model, CPU)."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from inference import scoring
from inference.scoring import ScoreCache, Scorer, combine, model_fingerprint, score_items
from maerak.modes import LETTERS_MODE, OPTIONS_MODE, Request, softmax, to_original
from maerak.prompt import (
    ALL_ORDERS,
    ALPACA_SYSTEM,
    CYCLIC_ORDERS,
    INSTRUCTION,
    LETTERS,
    fit_prompt,
    render_input,
    render_prompt,
)
from maerak.schema import load_items
from tests.conftest import simulate_oom


@pytest.fixture(scope="module")
def dev_items():
    from conftest import SAMPLE

    items, _ = load_items(SAMPLE / "dev.json")
    return items


@pytest.fixture(scope="module")
def scorer(tiny_model_dir):
    return Scorer(tiny_model_dir, dtype="float32", batch_size=4, max_length=1024)


# ---------------------------------------------------------------- permutation mapping
class OptionAwareFake:
    """Letter logits are a known function of WHICH ORIGINAL option is shown at each letter,
    read back from the rendered prompt text (so render_prompt + mapping are both exercised)."""

    def __init__(self, items, value_of_option=(3.0, 1.0, -2.0)):
        self.items = {it.id: it for it in items}
        self.value = value_of_option
        self.fingerprint = "fake"
        self.calls = 0

    def score(self, requests, cache=None, on_batch=None, progress=False):
        out = []
        for r in requests:
            self.calls += 1
            item = self.items[r.item_id]
            block = r.context.split("[Option]\n", 1)[1].split("\n\n###")[0].splitlines()
            row = []
            for k, line in enumerate(block[:3]):
                assert line.startswith(f"{LETTERS[k]}. ")
                row.append(self.value[item.options.index(line[3:])])
            out.append(row)
        return out


@pytest.mark.parametrize("order", ALL_ORDERS)
def test_to_original_returns_each_letter_probability_to_its_option(order):
    letter_p = [0.5, 0.3, 0.2]
    orig = to_original(letter_p, order)
    for k, i in enumerate(order):
        assert orig[i] == letter_p[k]


@pytest.mark.parametrize("tta", ["none", "cyclic", "all"])
def test_every_order_maps_probabilities_back_to_the_original_options(dev_items, tta):
    items = [it for it in dev_items if len(set(it.options)) == 3][:5]
    fake = OptionAwareFake(items)
    expected = softmax(fake.value)
    probs = score_items(fake, items, LETTERS_MODE, tta=tta)
    assert fake.calls == len(items) * len(LETTERS_MODE.orders(tta))
    for it in items:
        assert probs[it.id] == pytest.approx(expected, abs=1e-12)
    # single orders, each permutation on its own
    for order in ALL_ORDERS:
        reqs = LETTERS_MODE.requests(items, [order])
        logits = fake.score(reqs)
        for req, lg in zip(reqs, logits):
            assert to_original(softmax(lg), order) == pytest.approx(expected, abs=1e-12)
            assert LETTERS_MODE.probabilities(req, lg) == to_original(softmax(lg), order)


def test_tta_averages_over_orders(dev_items):
    items = dev_items[:2]

    class PositionBiased:
        fingerprint = "bias"

        def score(self, requests, **_):  # always prefers letter A, whatever is shown there
            return [[2.0, 0.0, 0.0] for _ in requests]

    p_none = score_items(PositionBiased(), items, LETTERS_MODE, "none")
    p_cyc = score_items(PositionBiased(), items, LETTERS_MODE, "cyclic")
    a = softmax([2.0, 0.0, 0.0])
    assert p_none[items[0].id] == pytest.approx(a)
    # cyclic orders put every option at A once: the bias cancels out
    assert p_cyc[items[0].id] == pytest.approx([1 / 3] * 3)
    assert set(LETTERS_MODE.orders("cyclic")) == set(CYCLIC_ORDERS)
    with pytest.raises(ValueError):
        LETTERS_MODE.orders("some")


# ---------------------------------------------------------------- batching
@pytest.fixture(scope="module")
def mixed_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny checkpoint with one sliding and one FULL attention layer. The shared fixture's
    two layers are both sliding (window 64), so its last position never sees the left padding
    of ~400-token prompts and a broken padding mask would go unnoticed."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, Gemma3ForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.layer_types = ["sliding_attention", "full_attention"]
    torch.manual_seed(0)
    model = Gemma3ForCausalLM(config)
    path = tmp_path_factory.mktemp("mixed") / "model"
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


def test_batched_scores_equal_unbatched_scores(mixed_model_dir, dev_items):
    items = dev_items[:10]
    reqs = LETTERS_MODE.requests(items, CYCLIC_ORDERS[:2])
    one = Scorer(mixed_model_dir, batch_size=1)
    many = Scorer(mixed_model_dir, batch_size=7)
    assert "full_attention" in one.model.config.layer_types
    lengths = {len(one.encode(r).context) for r in reqs}
    assert len(lengths) > 3, "prompts must differ in length so that batches are padded"
    assert max(lengths) > one.model.config.sliding_window, "exercise the sliding-window layer too"
    a = one.score(reqs)
    b = many.score(reqs)
    for ra, rb in zip(a, b):
        assert ra == pytest.approx(rb, abs=1e-4)
    # The pad token's embedding is zero in a fresh model, which can hide a broken mask;
    # pad with an ordinary token instead: a correct mask makes the pad id irrelevant.
    many.pad_id = one.tokenizer("화자1")["input_ids"][-1]
    for ra, rb in zip(a, many.score(reqs)):
        assert ra == pytest.approx(rb, abs=1e-4)
    # a letter's log-likelihood is the log-softmax at the last position of the full forward pass
    import torch

    enc = one.encode(reqs[0])
    assert all(len(c) == 1 for c in enc.continuations)  # letters: one token each
    with torch.inference_mode():
        logits = one.model(input_ids=torch.tensor([enc.context])).logits[0, -1].float()
    letters = [c[0] for c in enc.continuations]
    assert a[0] == pytest.approx(logits.log_softmax(-1)[letters].tolist(), abs=1e-4)
    # and the softmax over the three is the softmax over the three letter logits (the log-sum-exp cancels)
    assert softmax(a[0]) == pytest.approx(softmax(logits[letters].tolist()), abs=1e-4)


def test_buckets_are_length_sorted_and_cover_everything():
    plan = scoring.buckets([5, 9, 1, 9, 3], 2)
    assert plan == [[1, 3], [0, 4], [2]]


def test_long_prompts_drop_the_oldest_turns_and_keep_bos_instruction_and_options(scorer, dev_items):
    tok = scorer.tokenizer
    item = next(it for it in dev_items if len(it.conversation) >= 4)
    req = LETTERS_MODE.request(item, (1, 2, 0))
    full = len(tok(req.context)["input_ids"])
    bare = len(tok(render_prompt(item, (1, 2, 0), skip_turns=len(item.conversation)))["input_ids"])
    limit = (full + bare) // 2
    enc, cut = scoring.encode_request(tok, req, limit)
    ids = list(enc.context)
    assert cut and bare < len(ids) <= limit
    assert ids[0] == tok.bos_token_id
    text = tok.decode(ids[1:])
    prompt, skipped = fit_prompt(item, (1, 2, 0), lambda t: len(tok(t)["input_ids"]), limit)
    assert text == prompt and 0 < skipped < len(item.conversation)
    assert INSTRUCTION in text and text.startswith(ALPACA_SYSTEM)
    assert text.endswith(render_input(item, (1, 2, 0)).split("[Question]")[1] + "\n\n### Response:\n")
    shown = text.split("[Conversation]\n", 1)[1].split("\n\n[Question]")[0].splitlines()
    assert shown == [f"화자{u.speaker}: {u.text}" for u in item.conversation[skipped:]]  # the newest turns stay
    # one turn fewer left out would not fit: the fewest turns are dropped
    assert len(tok(render_prompt(item, (1, 2, 0), skip_turns=skipped - 1))["input_ids"]) > limit
    # a prompt that fits is untouched
    enc, cut = scoring.encode_request(tok, req, full)
    assert (list(enc.context), cut) == (tok(req.context)["input_ids"], False)


def test_scorer_names_the_items_it_cut(scorer, dev_items):
    short = Scorer.__new__(Scorer)
    short.__dict__.update(scorer.__dict__)
    lengths = {it.id: len(scorer.tokenizer(render_prompt(it))["input_ids"]) for it in dev_items[:4]}
    short.max_length = sorted(lengths.values())[1]  # the two longest prompts are over
    logits = short.score(LETTERS_MODE.requests(dev_items[:4], [(0, 1, 2)]))
    assert len(logits) == 4
    assert sorted(short.truncated) == sorted(i for i, n in lengths.items() if n > short.max_length)
    assert len(short.truncated) >= 2


def test_without_an_item_the_cut_still_keeps_bos(scorer, dev_items):
    tok = scorer.tokenizer
    req = Request("x", (0, 1, 2), render_prompt(dev_items[0]), ("A", "B", "C"), LETTERS_MODE)
    enc, cut = scoring.encode_request(tok, req, 40)
    ids = list(enc.context)
    assert cut and len(ids) == 40 and ids[0] == tok.bos_token_id
    assert ids[1:] == tok(req.context)["input_ids"][-39:]


# ---------------------------------------------------------------- ensembles
def test_mean_ensemble_and_its_tie_rule():
    choice, mean = combine([[0.2, 0.5, 0.3], [0.4, 0.3, 0.3]], "mean")
    assert choice == 1 and mean == pytest.approx([0.3, 0.4, 0.3])
    # exact tie between options 1 and 3 -> lowest index
    assert combine([[0.4, 0.2, 0.4]], "mean")[0] == 0
    assert combine([[0.2, 0.4, 0.4]], "mean")[0] == 1


def test_vote_ensemble_and_its_tie_rules():
    # majority wins even against a higher mean probability
    assert combine([[0.4, 0.35, 0.25], [0.4, 0.35, 0.25], [0.0, 1.0, 0.0]], "vote")[0] == 0
    # 1-1-1 split: highest mean probability among the tied options
    assert combine([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]], "vote")[0] == 2
    # 1-1 split with equal mean probability: lowest option index
    assert combine([[0.6, 0.4, 0.0], [0.4, 0.6, 0.0]], "vote")[0] == 0
    assert combine([[0.0, 0.6, 0.4], [0.0, 0.4, 0.6]], "vote")[0] == 1
    # a model's own tie votes for the lowest index
    assert combine([[0.0, 0.5, 0.5]], "vote")[0] == 1
    with pytest.raises(ValueError):
        combine([[1, 0, 0]], "max")


# ---------------------------------------------------------------- cache / resume
class Interrupt(Exception):
    pass


def test_resume_after_interruption_scores_only_what_is_missing(tiny_model_dir, dev_items, tmp_path):
    items = dev_items[:9]
    reqs = LETTERS_MODE.requests(items, CYCLIC_ORDERS)  # 27 requests, batches of 4 -> 7 batches
    reference = Scorer(tiny_model_dir, batch_size=4).score(reqs)

    cache_path = tmp_path / "scores.jsonl"
    s = Scorer(tiny_model_dir, batch_size=4)

    def stop_after_two(batch, done):
        if batch == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        s.score(reqs, cache=ScoreCache(cache_path), on_batch=stop_after_two)
    lines = cache_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8
    with open(cache_path, "a", encoding="utf-8") as fh:  # a torn write from a killed process
        fh.write('{"key": "x|y|012|')

    forwarded = []
    real_forward = s.forward

    def counting(batch):
        forwarded.append(len(batch))
        return real_forward(batch)

    s.forward = counting
    resumed = s.score(reqs, cache=ScoreCache(cache_path))
    assert sum(forwarded) == len(reqs) - 8  # cached requests were not re-scored
    assert resumed == reference  # exactly, not approximately

    forwarded.clear()
    again = s.score(reqs, cache=ScoreCache(cache_path))
    assert forwarded == [] and again == reference


def test_cache_is_keyed_by_model_mode_order_and_prompt(dev_items, tmp_path):
    cache = ScoreCache(tmp_path / "c.jsonl")
    it = dev_items[0]
    r0 = LETTERS_MODE.request(it, (0, 1, 2))
    r1 = LETTERS_MODE.request(it, (1, 2, 0))
    cache.put_many("m1", [(r0, [1.0, 2.0, 3.0])])
    reread = ScoreCache(tmp_path / "c.jsonl")
    assert reread.get("m1", r0) == [1.0, 2.0, 3.0]
    assert reread.get("m2", r0) is None
    assert reread.get("m1", r1) is None
    assert reread.get("m1", dataclasses.replace(r0, context=r0.context + " ")) is None
    assert reread.get("m1", dataclasses.replace(r0, continuations=("B", "A", "C"))) is None
    assert reread.get("m1", dataclasses.replace(r0, mode=OPTIONS_MODE)) is None  # same texts, another mode
    row = json.loads((tmp_path / "c.jsonl").read_text(encoding="utf-8"))
    assert row["id"] == it.id and row["order"] == "012" and row["mode"] == LETTERS_MODE.key
    assert row["loglikelihoods"] == [1.0, 2.0, 3.0]


def test_fingerprint_follows_the_weights(tiny_model_dir, tmp_path):
    from conftest import save_tiny_checkpoint

    other = save_tiny_checkpoint(tmp_path / "other", seed=1)
    assert model_fingerprint(tiny_model_dir) == model_fingerprint(tiny_model_dir)
    assert model_fingerprint(tiny_model_dir) != model_fingerprint(other)


def test_probabilities_are_a_softmax_over_the_three_loglikelihoods():
    p = softmax([1000.0, 999.0, 0.0])
    assert sum(p) == pytest.approx(1.0)
    assert p[0] / p[1] == pytest.approx(math.e)


def test_out_of_memory_halves_the_batch_and_keeps_the_scores(tiny_model_dir, dev_items, capsys):
    """Issue 8: submit must fit the GPU it gets. A batch that runs out of memory is split in halves
    (and later batches use the size that fit); the scores are those of the smaller batches."""
    import torch

    items = dev_items[:6]
    reqs = LETTERS_MODE.requests(items, CYCLIC_ORDERS[:2])  # 12 requests, batches of 8
    reference = Scorer(tiny_model_dir, batch_size=2).score(reqs)
    s = Scorer(tiny_model_dir, batch_size=8)
    seen = simulate_oom(s, fits=2)
    got = s.score(reqs)
    assert s.fit_batch == 2 and seen[:3] == [8, 4, 2]
    assert max(seen[3:]) == 2  # the second batch goes straight to the size that fit
    assert all(math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-5) for r, q in zip(got, reference) for a, b in zip(r, q))
    assert "out of GPU memory at batch size 8" in capsys.readouterr().err

    s.forward = lambda batch: (_ for _ in ()).throw(torch.OutOfMemoryError("even one"))
    s.fit_batch = None
    with pytest.raises(torch.OutOfMemoryError):
        s.score(reqs[:1])
