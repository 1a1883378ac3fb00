"""The one prompt renderer: particles, every category, option orders, and agreement with Axolotl."""
from __future__ import annotations

import pytest

from maerak.prompt import (
    ALL_ORDERS,
    LETTERS,
    alpaca_row,
    answer_letter,
    answer_token_ids,
    question_line,
    render_input,
    render_prompt,
    ro_particle,
)
from maerak.schema import CATEGORIES, LABELS, load_items


@pytest.mark.parametrize(
    "category, expected",
    [
        ("원인", "위 대화의 원인으로 올바른 지문은?"),
        ("후행사건", "위 대화의 후행사건으로 올바른 지문은?"),
        ("전제", "위 대화의 전제로 올바른 지문은?"),
        ("동기", "위 대화의 동기로 올바른 지문은?"),
        ("반응", "위 대화의 반응으로 올바른 지문은?"),
    ],
)
def test_question_keeps_category_with_the_right_particle(category, expected):
    # The official baseline dropped the category for 동기 and 전제; this must not.
    assert question_line(category) == expected


def test_particle_rules_beyond_the_categories():
    assert ro_particle("서울") == "로"  # final ㄹ takes 로
    assert ro_particle("학교") == "로"
    assert ro_particle("집") == "으로"


def test_every_category_in_sample_renders(sample_dir):
    items, _ = load_items(sample_dir / "train.json")
    assert {it.category for it in items} == set(CATEGORIES)
    for it in items:
        text = render_input(it)
        assert text.startswith("[Conversation]\n화자")
        assert f"위 대화의 {it.category}" in text
        assert "\n[Option]\nA. " in text and "\nB. " in text and "\nC. " in text


@pytest.mark.parametrize("order", ALL_ORDERS)
def test_answer_moves_with_its_option(sample_dir, order):
    item = load_items(sample_dir / "train.json")[0][0]
    letter = answer_letter(item, order)
    shown = render_input(item, order)
    gold_text = item.options[item.label_index]
    assert f"{letter}. {gold_text}" in shown
    assert LABELS[order[LETTERS.index(letter)]] == item.label  # the letter maps back to the gold option


def test_rationale_rows_start_with_the_letter(sample_dir):
    item = load_items(sample_dir / "train.json")[0][0]
    row = alpaca_row(item, rationale="화자1이 직접 말했다.")
    assert row["output"].startswith(answer_letter(item) + "\n")


def test_inference_prompt_is_what_axolotl_trains_on(sample_dir, tiny_model_dir):
    """Axolotl's alpaca strategy must see exactly our prompt, and its first label must be our answer token."""
    from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
    from axolotl.prompters import AlpacaPrompter
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    item = load_items(sample_dir / "train.json")[0][0]
    row = alpaca_row(item)
    prompter = AlpacaPrompter("instruct")
    assert next(prompter.build_prompt(row["instruction"], row["input"])) == render_prompt(item)

    strategy = AlpacaPromptTokenizingStrategy(prompter, tokenizer, False, 4096)
    tokenized = strategy.tokenize_prompt(row)
    prompt_ids = tokenizer(render_prompt(item))["input_ids"]
    assert tokenized["input_ids"][: len(prompt_ids)] == prompt_ids
    first_label = next(t for t in tokenized["labels"] if t != -100)
    assert first_label == answer_token_ids(tokenizer)[LETTERS.index(row["output"])]


def test_fit_prompt_leaves_out_the_fewest_oldest_turns_and_keeps_the_targets(sample_dir):
    from maerak.prompt import fit_prompt

    items, _ = load_items(sample_dir / "train.json")
    item = next(it for it in items if len(it.conversation) >= 4)
    full = render_prompt(item)
    assert fit_prompt(item, (0, 1, 2), len, len(full)) == (full, 0)
    turn0 = f"화자{item.conversation[0].speaker}: {item.conversation[0].text}\n"
    prompt, skipped = fit_prompt(item, (0, 1, 2), len, len(full) - 1)  # one character too long
    assert skipped == 1 and prompt == full.replace(turn0, "", 1)
    bare = render_prompt(item, skip_turns=len(item.conversation))
    prompt, skipped = fit_prompt(item, (0, 1, 2), len, len(bare))
    assert skipped == len(item.conversation) and prompt == bare
    # the question still shows its target utterances, and the options all stay
    for u in item.conversation:
        if set(item.reference_ids) & set(u.ids):
            assert f"대상 발화 - 화자{u.speaker}: {u.text}" in bare
    assert all(f"{letter}. {opt}" in bare for letter, opt in zip(LETTERS, item.options))
