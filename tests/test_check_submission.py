"""Every way a submission can be wrong is named with file, item id and field."""
from __future__ import annotations

import copy
import json

import pytest

from inference import check_submission
from inference.check_submission import check_submission_file
from maerak.files import dumps_json


@pytest.fixture
def test_file(sample_dir):
    return sample_dir / "test.json"


@pytest.fixture
def good(test_file):
    data = json.loads(test_file.read_text(encoding="utf-8"))
    for n, item in enumerate(data):
        item["output"] = f"inference_{n % 3 + 1}"
    return data


def write(tmp_path, data, raw: bytes | None = None):
    path = tmp_path / "submission.json"
    path.write_bytes(raw if raw is not None else dumps_json(data).encode("utf-8"))
    return path


def problems_for(tmp_path, test_file, data=None, raw=None):
    return [(p.item_id, p.field, p.message) for p in check_submission_file(write(tmp_path, data, raw), test_file)]


def test_a_good_submission_passes(tmp_path, test_file, good, capsys):
    path = write(tmp_path, good)
    assert check_submission_file(path, test_file) == []
    assert check_submission.main(["--submission", str(path), "--test", str(test_file)]) == 0
    assert "OK (20 items" in capsys.readouterr().out


def test_failures_are_named_and_exit_non_zero(tmp_path, test_file, good, capsys):
    good[2]["output"] = "inference_4"
    path = write(tmp_path, good)
    assert check_submission.main(["--submission", str(path), "--test", str(test_file)]) == 1
    out = capsys.readouterr().out
    assert f"{path}: {good[2]['id']}: output: 'inference_4' is not one of" in out


@pytest.mark.parametrize("value", ["", None, "inference_0", "A", 1])
def test_bad_output_values(tmp_path, test_file, good, value):
    good[5]["output"] = value
    probs = problems_for(tmp_path, test_file, good)
    assert [(i, f) for i, f, _ in probs] == [(good[5]["id"], "output")]


def test_missing_output_field(tmp_path, test_file, good):
    del good[0]["output"]
    assert [(i, f) for i, f, _ in problems_for(tmp_path, test_file, good)] == [(good[0]["id"], "output")]


def test_count_differs(tmp_path, test_file, good):
    gone = good.pop()
    probs = problems_for(tmp_path, test_file, good)
    assert ("-", "file") in [(i, f) for i, f, _ in probs]
    assert (gone["id"], "id") in [(i, f) for i, f, _ in probs]


def test_extra_item(tmp_path, test_file, good):
    extra = copy.deepcopy(good[0])
    extra["id"] = "nikluge-extra"
    good.append(extra)
    probs = [(i, f) for i, f, _ in problems_for(tmp_path, test_file, good)]
    assert ("-", "file") in probs and ("nikluge-extra", "id") in probs


def test_order_differs(tmp_path, test_file, good):
    good[0], good[1] = good[1], good[0]
    probs = problems_for(tmp_path, test_file, good)
    assert {(i, f) for i, f, _ in probs} == {(good[0]["id"], "id"), (good[1]["id"], "id")}
    assert all("order differs" in m for _, _, m in probs)


def test_duplicate_id(tmp_path, test_file, good):
    good[1] = copy.deepcopy(good[0])
    probs = [(i, f) for i, f, _ in problems_for(tmp_path, test_file, good)]
    assert (good[0]["id"], "id") in probs  # the duplicate
    assert len(probs) >= 2  # and the test item that is now missing


def test_changed_input_fields_are_named(tmp_path, test_file, good):
    good[4]["input"]["inference_2"] += "!"
    good[6]["input"]["conversation"][0]["utterance"] = "바뀐 발화"
    good[7]["extra"] = 1
    del good[8]["input"]["category"]
    probs = {(i, f) for i, f, _ in problems_for(tmp_path, test_file, good)}
    assert probs == {
        (good[4]["id"], "input.inference_2"),
        (good[6]["id"], "input.conversation[0].utterance"),
        (good[7]["id"], "extra (not in the test file)"),
        (good[8]["id"], "input.category (missing)"),
    }


def test_escaped_hangul_is_refused(tmp_path, test_file, good):
    raw = json.dumps(good, ensure_ascii=True, indent=2).encode("ascii")
    probs = problems_for(tmp_path, test_file, raw=raw)
    assert probs and all(f == "encoding" for _, f, _ in probs)
    assert {i for i, _, _ in probs} == {g["id"] for g in good}  # each item located by its id


def test_escaped_non_hangul_is_fine(tmp_path, test_file, good):
    text = dumps_json(good)
    assert "?" in text
    good_raw = text.replace("?", "\\u003f").encode("utf-8")
    assert b"\\u003f" in good_raw
    assert problems_for(tmp_path, test_file, raw=good_raw) == []


def test_bom_is_refused(tmp_path, test_file, good):
    probs = problems_for(tmp_path, test_file, raw=b"\xef\xbb\xbf" + dumps_json(good).encode("utf-8"))
    assert [(i, f) for i, f, _ in probs] == [("-", "file")]
    assert "BOM" in probs[0][2]


def test_not_utf8(tmp_path, test_file, good):
    raw = dumps_json(good).encode("cp949")
    probs = problems_for(tmp_path, test_file, raw=raw)
    assert [(i, f) for i, f, _ in probs] == [("-", "file")] and "not UTF-8" in probs[0][2]


def test_not_json_and_not_an_array(tmp_path, test_file, good):
    probs = problems_for(tmp_path, test_file, raw=b'[{"id": ')
    assert [(i, f) for i, f, _ in probs] == [("-", "file")] and "not valid JSON" in probs[0][2]
    probs = problems_for(tmp_path, test_file, raw=b'{"id": "x"}')
    assert [(i, f) for i, f, _ in probs] == [("-", "file")] and "JSON array" in probs[0][2]


def test_item_not_an_object_and_missing_files(tmp_path, test_file, good):
    good[3] = "inference_1"
    probs = [(i, f) for i, f, _ in problems_for(tmp_path, test_file, good)]
    assert ("item #3", "item") in probs
    missing = check_submission_file(tmp_path / "none.json", test_file)
    assert [(p.field, p.message) for p in missing] == [("file", "no such file")]
