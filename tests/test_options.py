"""Options mode: each option's summed token log-probs after a shared context (the scoring
primitive with continuations longer than one token).

Checked against a brute-force forward of context + option per option (no cache, no
padding; options right-padded on the shared-prefix cache, a full-attention layer, an ordinary
pad token), against Axolotl's tokenisation of the options-mode training row, and through
`submit` (probabilities, ties, order-independence). The out-of-memory fallback: test_scoring.py."""
from __future__ import annotations

import json

import pytest

from inference.ensemble import item_probs
from inference.scoring import Scorer
from inference.tokens import encode_request
from maerak.modes import OPTIONS_MODE
from maerak.prompt import IDENTITY, OPTIONS_INSTRUCTION, option_row, render_context, response_ids
from maerak.schema import load_items


def brute_force(scorer: Scorer, context: list[int], option: list[int]) -> float:
    """log p(option | context) from one plain forward of the concatenation."""
    import torch

    ids = torch.tensor([list(context) + list(option)])
    with torch.inference_mode():
        logp = scorer.model(input_ids=ids).logits[0].float().log_softmax(-1)
    return float(sum(logp[len(context) - 1 + j, t] for j, t in enumerate(option)))


@pytest.fixture(scope="module")
def mixed_model_dir(tiny_model_dir, tmp_path_factory):
    """The tiny checkpoint with one sliding and one FULL attention layer: with both layers sliding
    (window 64), no position would see the left padding of a batch of ~400-token contexts."""
    import torch
    from transformers import AutoConfig, AutoTokenizer, Gemma3ForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.layer_types = ["sliding_attention", "full_attention"]
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("mixed-options") / "model"
    Gemma3ForCausalLM(config).save_pretrained(path)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(path)
    return path


@pytest.mark.parametrize("batch_size", [1, 3])
def test_options_scorer_matches_a_forward_per_option(mixed_model_dir, sample_dir, batch_size):
    items, _ = load_items(sample_dir / "dev.json")
    scorer = Scorer(mixed_model_dir, batch_size=batch_size)
    # an ordinary token as padding: a correct mask makes the pad id irrelevant
    scorer.pad_id = scorer.tokenizer("화자1")["input_ids"][-1]
    # several items, prompts longer than the tiny model's 64-token sliding window
    requests = OPTIONS_MODE.requests(items[:5], [IDENTITY])
    got = scorer.score(requests)
    for req, row in zip(requests, got):
        context = scorer.tokenizer(req.context)["input_ids"]
        assert len(context) > 64
        options = [response_ids(scorer.tokenizer, c) for c in req.continuations]
        expected = [brute_force(scorer, context, o) for o in options]
        assert row == pytest.approx(expected, rel=1e-4, abs=1e-4)
    # contexts of several lengths and right padding (options of several token lengths) are exercised
    assert len({len(scorer.encode(r).context) for r in requests}) > 1
    assert any(len({len(response_ids(scorer.tokenizer, c)) for c in r.continuations}) > 1 for r in requests)


def test_options_scores_do_not_depend_on_option_order(tiny_model_dir, sample_dir):
    items, _ = load_items(sample_dir / "dev.json")
    item = items[0]
    scorer = Scorer(tiny_model_dir)
    plain, swapped = OPTIONS_MODE.request(item), OPTIONS_MODE.request(item, (2, 1, 0))
    assert swapped.continuations == tuple(reversed(item.options)) and swapped.context == plain.context
    straight, backwards = scorer.score([plain, swapped])
    assert straight == pytest.approx(list(reversed(backwards)), rel=1e-5, abs=1e-5)
    # and the mode maps both back to the same option probabilities
    assert OPTIONS_MODE.probabilities(plain, straight) == pytest.approx(OPTIONS_MODE.probabilities(swapped, backwards))


def test_options_mode_scores_once_whatever_the_tta():
    assert OPTIONS_MODE.orders("all") == (IDENTITY,) and OPTIONS_MODE.orders("none") == (IDENTITY,)
    assert "nothing to permute" in OPTIONS_MODE.tta_note("cyclic") and OPTIONS_MODE.tta_note("none") is None
    with pytest.raises(ValueError):
        OPTIONS_MODE.orders("some")


def test_equal_options_tie_to_the_first(sample_dir):
    items, _ = load_items(sample_dir / "dev.json")
    requests = OPTIONS_MODE.requests(items[:1], [IDENTITY])
    probs = item_probs(items[:1], requests, [[-3.0, -3.0, -5.0]])[items[0].id]
    assert probs[0] == probs[1] > probs[2]


def test_scored_context_is_what_axolotl_trains_on(sample_dir, tiny_model_dir):
    """Axolotl's alpaca strategy on the options row: its prompt tokens are our context, and its
    trained tokens are the correct option's tokens (then EOS)."""
    from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
    from axolotl.prompters import AlpacaPrompter
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    item = load_items(sample_dir / "train.json")[0][0]
    row = option_row(item)
    assert row["instruction"] == OPTIONS_INSTRUCTION and row["output"] == item.options[item.label_index]
    prompter = AlpacaPrompter("instruct")
    assert next(prompter.build_prompt(row["instruction"], row["input"])) == render_context(item)

    tokenized = AlpacaPromptTokenizingStrategy(prompter, tokenizer, False, 4096).tokenize_prompt(row)
    encoded, _ = encode_request(tokenizer, OPTIONS_MODE.request(item), 4096)
    context = list(encoded.context)
    assert tokenized["input_ids"][: len(context)] == context
    assert encoded.continuations[item.label_index] == tuple(response_ids(tokenizer, row["output"]))
    trained = [t for t in tokenized["labels"] if t != -100]
    assert trained == response_ids(tokenizer, row["output"]) + [tokenizer.eos_token_id]
    assert all(t == -100 for t in tokenized["labels"][: len(context)])


def test_over_long_context_leaves_out_the_oldest_turns_and_keeps_room_for_the_options(sample_dir, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    item = next(it for it in load_items(sample_dir / "dev.json")[0] if len(it.conversation) >= 4)
    req = OPTIONS_MODE.request(item)
    full = tokenizer(req.context)["input_ids"]
    longest = max(len(response_ids(tokenizer, c)) for c in item.options)
    # the model reads the context and each option but its last token (that one is only predicted)
    enc, cut = encode_request(tokenizer, req, len(full) + longest - 1)
    assert (list(enc.context), cut) == (full, False)
    enc, cut = encode_request(tokenizer, req, len(full) + longest - 2)
    assert cut and len(enc.context) + longest - 1 <= len(full) + longest - 2
    assert list(enc.context) == tokenizer(render_context(item, 1))["input_ids"]


def test_submit_in_options_mode_writes_probabilities(tmp_path, tiny_model_dir, sample_dir):
    from inference.submit import main as submit_main

    out = tmp_path / "dev_predictions.json"
    assert submit_main(["--profile", "sample", "--mode", "options", "--model", str(tiny_model_dir),
                        "--input", str(sample_dir / "dev.json"), "--output", str(out), "--tta", "cyclic",
                        "--quiet"]) == 0
    probs = json.loads(out.with_name("dev_predictions.probs.json").read_text(encoding="utf-8"))
    assert probs["mode"] == "options" and probs["tta"] == "none"  # options mode has nothing to permute
    rows = probs["items"]
    assert all(abs(sum(r["probs"]) - 1) < 1e-9 for r in rows)
    answers = {it["id"]: it["output"] for it in json.loads(out.read_text(encoding="utf-8"))}
    assert all(answers[r["id"]] == r["prediction"] for r in rows)


def test_answer_position_loss_covers_the_option_tokens(sample_dir, tiny_model_dir):
    """The answer-position plugin on an options row: logits at exactly the option's tokens and
    EOS (not one letter), and the standard loss."""
    import copy

    import torch
    from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
    from axolotl.prompters import AlpacaPrompter
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.answer_loss import enable, shift, trained_positions

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    item = load_items(sample_dir / "train.json")[0][0]
    row = AlpacaPromptTokenizingStrategy(AlpacaPrompter("instruct"), tokenizer, False, 4096).tokenize_prompt(
        option_row(item))
    batch = {"input_ids": torch.tensor([row["input_ids"]]), "labels": torch.tensor([row["labels"]])}
    n_option = len(response_ids(tokenizer, item.options[item.label_index]))
    assert n_option > 1
    assert len(trained_positions(shift(batch["labels"]))) == n_option + 1

    standard = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    answer = enable(copy.deepcopy(standard))
    with torch.no_grad():
        expected = standard(**batch).loss
        got = answer(**batch)
    assert got.logits.shape[1] == n_option + 1
    assert abs(float(got.loss) - float(expected)) <= 1e-5 * abs(float(expected))
