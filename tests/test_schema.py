"""The data contract: real-file quirks load, each defect is named by file, item id and field."""
from __future__ import annotations

import json

import pytest

from maerak.schema import DataError, load_items, parse_items, with_outputs
from preprocessing.validate import main as validate_main


def test_quirks_file_loads_with_bom_crlf_integer_and_empty_utterances(fixtures_dir):
    raw = (fixtures_dir / "quirks_valid.json").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") and b"\r\n" in raw  # the fixture really carries the quirks
    items, warnings = load_items(fixtures_dir / "quirks_valid.json")
    texts = [u.text for it in items for u in it.conversation]
    assert "3" in texts  # integer utterance kept as text
    assert "" in texts  # empty utterance kept, so reference ids stay valid
    assert any("name1" in t or "name2" in t for t in texts)
    assert warnings == []


def test_refined_variant_list_ids_and_dangling_reference_warns(fixtures_dir):
    items, warnings = load_items(fixtures_dir / "quirks_refined.json")
    assert len(items) == 2
    assert any(len(u.ids) > 1 for it in items for u in it.conversation)
    assert [w.field for w in warnings] == ["input.reference_id"]
    assert "points at no utterance" in str(warnings[0]) and warnings[0].item_id == items[1].id


def test_test_file_output_empty_is_unlabeled(fixtures_dir):
    items, _ = load_items(fixtures_dir / "quirks_test.json")
    assert all(it.label is None for it in items)
    with pytest.raises(DataError) as exc:
        load_items(fixtures_dir / "quirks_test.json", require_labels=True)
    assert "label required" in str(exc.value)


@pytest.mark.parametrize(
    "name, item_id, field, words",
    [
        ("bad_label.json", "fixture-bad-label-002", "output", "unknown label"),
        ("bad_missing_option.json", "fixture-bad-missing-option-001", "input.inference_3", "missing"),
        ("bad_missing_category.json", "fixture-bad-missing-category-002", "input.category", "missing"),
        ("bad_missing_conversation.json", "fixture-bad-missing-conversation-001", "input.conversation", "missing"),
        ("bad_unknown_category.json", "fixture-bad-unknown-category-002", "input.category", "unknown category"),
        ("bad_duplicate_id.json", "fixture-bad-duplicate-id-001", "id", "duplicate id"),
        ("bad_not_json.json", "-", "file", "not valid JSON"),
        ("bad_not_list.json", "-", "file", "expected a JSON list"),
    ],
)
def test_bad_files_name_file_item_and_field(fixtures_dir, capsys, name, item_id, field, words):
    path = fixtures_dir / name
    with pytest.raises(DataError) as exc:
        load_items(path)
    assert any(p.item_id == item_id and p.field == field and words in p.message for p in exc.value.problems)
    assert validate_main([str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: {item_id}: {field}: " in err


def test_validate_prints_counts_for_valid_files(sample_dir, capsys):
    assert validate_main([str(sample_dir / "train.json"), str(sample_dir / "test.json")]) == 0
    out = capsys.readouterr().out
    assert "train.json: ok: 60 items, 20 conversations" in out
    assert "unlabeled 20" in out


def test_every_problem_is_reported_not_just_the_first(tmp_path):
    items = [
        {"id": "a", "input": {"conversation": [], "category": "원인", "inference_1": "x", "inference_2": "y", "inference_3": "z"}, "output": "inference_1"},
        {"id": "b", "input": {"conversation": [{"speaker": 1, "utterance": "안녕", "utterance_id": "u1"}], "category": "기쁨", "inference_1": "x", "inference_2": "y", "inference_3": "z"}, "output": "inference_9"},
    ]
    parsed, problems = parse_items(items, "f.json")
    assert parsed == []
    assert {(p.item_id, p.field) for p in problems} == {("a", "input.conversation"), ("b", "input.category"), ("b", "output")}


def test_with_outputs_keeps_everything_but_output(sample_dir):
    items, _ = load_items(sample_dir / "test.json")
    filled = with_outputs(items, {it.id: "inference_2" for it in items})
    original = json.loads((sample_dir / "test.json").read_text(encoding="utf-8"))
    assert [f["id"] for f in filled] == [o["id"] for o in original]
    assert all(f["input"] == o["input"] and f["output"] == "inference_2" for f, o in zip(filled, original))


def test_shared_conversations_have_one_key(sample_dir):
    items, _ = load_items(sample_dir / "train.json")
    assert len({it.conversation_key for it in items}) == 20
