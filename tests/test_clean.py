"""Each cleaning rule in maerak/cleaning.yml, and item-level behaviour."""
from __future__ import annotations

import pytest

from maerak import clean
from maerak.schema import Item, Utterance


@pytest.fixture(scope="module")
def rules():
    return clean.load_rules()


def make_item(texts, refs=("u2",), options=("옵션 하나", "옵션 둘", "옵션 셋")):
    conv = tuple(Utterance(1 + i % 2, t, (f"u{i + 1}",)) for i, t in enumerate(texts))
    return Item("t-1", conv, tuple(refs), "원인", tuple(options), "inference_2", raw={})


def test_placeholders_are_replaced_with_fitting_particles(rules):
    assert clean.replace_placeholders("name2야 너 어제 시험 어땠어?", rules) == "수아야 너 어제 시험 어땠어?"
    assert clean.replace_placeholders("name1아 나 잠을 못 자", rules) == "지훈아 나 잠을 못 자"
    # particle written for the other kind of name is re-chosen; same placeholder -> same name
    assert clean.replace_placeholders("name1야 name2이랑 name1는", rules) == "지훈아 수아랑 지훈은"
    assert clean.replace_placeholders("name10", rules) == "name10"


def test_stopword_markers_are_removed(rules):
    assert clean.clean_text("#@이모티콘# 진짜?", rules) == "진짜?"
    assert clean.clean_text("(사진) 이거 봐 #@시스템#파일#", rules) == "이거 봐"


def test_special_characters_are_removed(rules):
    assert clean.remove_special_characters("좋아♡ ^^ *굿* ★", rules) == "좋아  굿 "
    assert clean.clean_text("헐 대박~~ 축하해♥", rules) == "헐 대박 축하해"
    # ordinary punctuation, digits, latin and jamo stay
    assert clean.clean_text("3시에 KTX 타? ㅋㅋ", rules) == "3시에 KTX 타? ㅋㅋ"


def test_repeats_are_collapsed(rules):
    assert clean.collapse_repeats("진짜!!! 왜??", rules) == "진짜! 왜?"
    assert clean.clean_text("글쎄.... 그럼…", rules) == "글쎄... 그럼..."
    assert clean.collapse_repeats("ㅋㅋㅋㅋㅋ ㅠㅠㅠ", rules) == "ㅋㅋ ㅠㅠ"


def test_fillers_dropped_only_when_interjection(rules):
    assert clean.remove_fillers("음 책이 좀 많아서 걱정이야", rules) == "책이 좀 많아서 걱정이야"
    assert clean.remove_fillers("아, 그래 알았어", rules) == "그래 알았어"
    # not an interjection / not a standalone word / the whole utterance: kept
    assert clean.remove_fillers("음식 맛있다", rules) == "음식 맛있다"
    assert clean.remove_fillers("어디 가?", rules) == "어디 가?"
    assert clean.remove_fillers("어?", rules) == "어?"
    assert clean.remove_fillers("음...", rules) == "음..."


def test_whitespace_is_normalised(rules):
    assert clean.clean_text("  나   지금  가 ", rules) == "나 지금 가"


def test_clean_item_keeps_options_label_and_category(rules):
    item = make_item(["name1아 뭐 해?", "음 그냥 있어 ♡♡"], options=("화자1은 심심♡", "B!!", "음 C"))
    res = clean.clean_item(item, rules)
    assert res.item.options == item.options and res.item.label == item.label and res.item.category == item.category
    assert [u.text for u in res.item.conversation] == ["지훈아 뭐 해?", "그냥 있어"]
    assert item.conversation[0].text == "name1아 뭐 해?"  # frozen input untouched


def test_empty_utterances_dropped_but_references_kept(rules):
    item = make_item(["안녕", "#@이모티콘#", "♡♡", "응 잘 가"], refs=("u3",))
    res = clean.clean_item(item, rules)
    ids = [u.ids[0] for u in res.item.conversation]
    assert ids == ["u1", "u3", "u4"]               # u2 (empty, unreferenced) dropped
    assert res.item.conversation[1].text == "♡♡"   # referenced: kept with its original text
    assert any("u2" in n for n in res.notes) and any("u3" in n and "kept" in n for n in res.notes)


def test_item_with_nothing_left_is_dropped_with_reason(rules):
    res = clean.clean_item(make_item(["♡♡", "#@이모티콘#"], refs=()), rules)
    assert res.item is None and "empty" in res.reason


def test_placeholders_kept_when_an_option_mentions_one(rules):
    item = make_item(["name1아 뭐 해?", "그냥"], options=("name1은 심심하다", "b", "c"))
    res = clean.clean_item(item, rules)
    assert res.item.conversation[0].text == "name1아 뭐 해?"
    assert any("placeholders kept" in n for n in res.notes)


def test_rules_come_from_the_data_file(tmp_path):
    path = tmp_path / "c.yml"
    path.write_text("placeholders: {name1: 영희}\nparticles: [[아, 야]]\nfillers: []\nkeep_characters: '[\\w\\s]'\n", encoding="utf-8")
    rules = clean.load_rules(path)
    assert clean.clean_text("name1아 안녕!", rules) == "영희야 안녕"
