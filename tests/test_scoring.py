"""The scoring primitive in letters mode: permutation mapping, batching, ensembles, cache/resume (tiny model, CPU)."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest

from inference import scoring, tokens
from inference.caching import ScoreCache
from inference.ensemble import combine, score_items
from inference.scoring import Scorer
from maerak.errors import MaerakError
from maerak.fingerprint import model_digest as model_fingerprint
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


# ---------------------------------------------------------------- the shared-prefix tree
@pytest.fixture(scope="module")
def mixed_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny checkpoint with one sliding and one FULL attention layer (window 64: far shorter
    than the shared conversation prefix of ~400-token prompts)."""
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


@pytest.fixture(scope="module")
def softcapped_model_dir(tmp_path_factory):
    """A tiny Gemma-2: attention and final-logit soft-capping, alternating sliding (window 48) and
    full layers, as gemma-2-9b-it has them."""
    from conftest import build_tiny_tokenizer

    from maerak.tiny_model import build_gemma2

    tok = build_tiny_tokenizer()
    model = build_gemma2(tok, {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                               "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16,
                               "sliding_window": 48, "attn_logit_softcapping": 50.0,
                               "final_logit_softcapping": 30.0, "max_position_embeddings": 2048})
    path = tmp_path_factory.mktemp("gemma2") / "model"
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def full_forward(scorer: Scorer, enc) -> list[float]:
    """Each continuation's log-likelihood from one plain forward of context + continuation."""
    import torch

    out = []
    for c in enc.continuations:
        with torch.inference_mode():
            logp = scorer.model(input_ids=torch.tensor([list(enc.context) + list(c)])).logits[0].float().log_softmax(-1)
        out.append(float(sum(logp[len(enc.context) - 1 + j, t] for j, t in enumerate(c))))
    return out


@pytest.mark.parametrize("model", ["mixed_model_dir", "softcapped_model_dir"])
@pytest.mark.parametrize("mode,tta", [(LETTERS_MODE, "all"), (OPTIONS_MODE, "none")])
def test_the_shared_prefix_path_equals_a_full_forward_per_continuation(request, model, mode, tta, dev_items):
    """Issue 17: each conversation's prefix is read once and every item's suffix and continuations
    on its KV cache; the numbers must be a full forward's, on a model whose sliding window is far
    shorter than the shared prefix, and on Gemma-2 with soft-capping."""
    s = Scorer(request.getfixturevalue(model), batch_size=2)
    conversation = dev_items[0].conversation
    items = [it for it in dev_items if it.conversation == conversation] + [dev_items[-1]]
    assert len(items) >= 3  # two or more items share the conversation; one does not
    reqs = mode.requests(items, mode.orders(tta))
    encoded = [s.encode(r) for r in reqs]
    root = scoring.prefix_tree([e.context for e in encoded])
    shared = root.children[0] if len(root.children) == 2 else None
    assert shared is not None and len(root.tokens) + len(shared.tokens) > s.model.config.sliding_window
    got = s.score(reqs)
    for enc, row in zip(encoded, got):
        assert row == pytest.approx(full_forward(s, enc), rel=1e-4, abs=1e-4)
    if mode is OPTIONS_MODE:  # options of several token lengths: the continuation rows are right-padded
        assert any(len({len(c) for c in e.continuations}) > 1 for e in encoded)
        s.pad_id = s.tokenizer("화자1")["input_ids"][-1]  # an ordinary token: a correct mask makes it irrelevant
        for again, row in zip(s.score(reqs), got):
            assert again == pytest.approx(row, rel=1e-5, abs=1e-5)


def test_the_prefix_tree_reads_each_shared_prefix_once(dev_items):
    contexts = [(1, 5, 6, 7), (1, 5, 6, 8, 9), (1, 5, 2), (1, 5, 6, 8), (1, 3)]
    root = scoring.prefix_tree(contexts)

    def paths(node, before=()):
        here = before + node.tokens
        out = {i: here for i in node.ends}
        for child in node.children:
            assert child.tokens, "only the root may be empty"
            out.update(paths(child, here))
        return out

    assert paths(root) == dict(enumerate(contexts))  # every context is its path, once
    assert sorted(root.requests()) == list(range(len(contexts)))
    assert root.tokens == (1,) and [c.tokens[0] for c in root.children] == [3, 5]  # ordered by token

    def read(node):
        return len(node.tokens) + sum(read(c) for c in node.children)

    assert read(root) == 8  # 1 | 3 | 5 | 2 | 6 | 7 | 8 | 9: not the 18 of five forwards
    assert scoring.prefix_tree(list(reversed(contexts))).tokens == root.tokens
    with pytest.raises(ValueError, match="empty context"):
        scoring.prefix_tree([(1, 2), ()])


def test_a_letter_loglikelihood_is_the_log_softmax_at_the_last_prompt_position(mixed_model_dir, dev_items):
    import torch

    s = Scorer(mixed_model_dir)
    req = LETTERS_MODE.request(dev_items[0], (1, 2, 0))
    enc = s.encode(req)
    assert all(len(c) == 1 for c in enc.continuations)  # letters: one token each
    with torch.inference_mode():
        logits = s.model(input_ids=torch.tensor([enc.context])).logits[0, -1].float()
    letters = [c[0] for c in enc.continuations]
    row = s.score([req])[0]
    assert row == pytest.approx(logits.log_softmax(-1)[letters].tolist(), abs=1e-4)
    # and the softmax over the three is the softmax over the three letter logits (the log-sum-exp cancels)
    assert softmax(row) == pytest.approx(softmax(logits[letters].tolist()), abs=1e-4)


def test_long_prompts_drop_the_oldest_turns_and_keep_bos_instruction_and_options(scorer, dev_items):
    tok = scorer.tokenizer
    item = next(it for it in dev_items if len(it.conversation) >= 4)
    req = LETTERS_MODE.request(item, (1, 2, 0))
    full = len(tok(req.context)["input_ids"])
    bare = len(tok(render_prompt(item, (1, 2, 0), skip_turns=len(item.conversation)))["input_ids"])
    limit = (full + bare) // 2
    enc, cut = tokens.encode_request(tok, req, limit)
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
    enc, cut = tokens.encode_request(tok, req, full)
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
    enc, cut = tokens.encode_request(tok, req, 40)
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
    reqs = LETTERS_MODE.requests(items, CYCLIC_ORDERS)  # 27 requests from 3+ conversations
    reference = Scorer(tiny_model_dir, batch_size=4).score(reqs)

    cache_path = tmp_path / "scores.jsonl"
    s = Scorer(tiny_model_dir, batch_size=4)
    units = []

    def stop_after_two(unit, done):
        units.append(done)
        if unit == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        s.score(reqs, cache=ScoreCache(cache_path), on_batch=stop_after_two)
    lines = cache_path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == units[1] < len(reqs)  # two units (conversations) written, the rest not
    with open(cache_path, "a", encoding="utf-8") as fh:  # a torn write from a killed process
        fh.write('{"key": "x|y|012|')

    read = []
    real_extend = s.extend

    def counting(tokens, past):
        read.append(len(tokens))
        return real_extend(tokens, past)

    s.extend = counting
    resumed = s.score(reqs, cache=ScoreCache(cache_path))
    assert read and sum(read) < sum(len(s.encode(r).context) for r in reqs[units[1]:])  # only what was missing
    assert resumed == reference  # exactly, not approximately: the units do not depend on the cache

    read.clear()
    again = s.score(reqs, cache=ScoreCache(cache_path))
    assert read == [] and again == reference


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


def test_out_of_memory_halves_the_continuation_rows_and_keeps_the_scores(tiny_model_dir, dev_items, capsys):
    """Issue 8: submit must fit the GPU it gets. The continuation rows read on a context's cache
    (options mode) go in pieces of `batch_size`; a piece that runs out of memory is halved (and
    later pieces use the size that fit); the scores are those of the smaller pieces."""
    import torch

    reqs = OPTIONS_MODE.requests(dev_items[:3], [(0, 1, 2)])
    reference = Scorer(tiny_model_dir, batch_size=1).score(reqs)
    s = Scorer(tiny_model_dir, batch_size=3)
    seen = simulate_oom(s, fits=1)
    full_batch = s.fingerprint
    got = s.score(reqs)
    assert s.fit_batch == 1 and seen[:2] == [3, 1]  # three option rows, halved to one
    assert max(seen[1:]) == 1  # the unit is read again, and later rows go straight to the size that fit
    assert got == reference  # every number at batch 1, the batch the cache identity now names
    assert s.fingerprint != full_batch and s.fingerprint == Scorer(tiny_model_dir, batch_size=1).fingerprint
    assert "out of GPU memory at batch size 3" in capsys.readouterr().err

    s.forward = lambda cache, rows: (_ for _ in ()).throw(torch.OutOfMemoryError("even one"))
    s.fit_batch = None
    with pytest.raises(MaerakError, match="out of GPU memory scoring one continuation row"):
        s.score(reqs[:1])


def test_out_of_memory_in_a_tree_node_retries_once_then_says_so_in_one_line(tiny_model_dir, dev_items):
    """A node is read at batch 1: nothing to halve. One retry after freeing the allocator's cache
    (the same computation), then one line naming the checkpoint and the context length."""
    import torch

    reqs = LETTERS_MODE.requests(dev_items[:2], [(0, 1, 2)])
    reference = Scorer(tiny_model_dir).score(reqs)
    s = Scorer(tiny_model_dir)
    model, failures = s.model, []

    def flaky(*args, **kwargs):
        if not failures:
            failures.append(1)
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return model(*args, **kwargs)

    s.model = flaky
    assert s.score(reqs) == reference and failures == [1]
    s.model = lambda *a, **k: (_ for _ in ()).throw(torch.OutOfMemoryError("always"))
    with pytest.raises(MaerakError, match=r"out of GPU memory reading \d+ context tokens after \d+ \(batch 1"):
        s.score(reqs)
