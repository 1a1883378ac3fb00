"""Property tests: for any JSON value or byte string, the loader and the submission checker
return items or problems and never raise anything else."""
from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inference.check_submission import check_submission_data, check_submission_file
from maerak.schema import CATEGORIES, LABELS, DataError, Item, Problem, decode_json, load_items, parse_items

ROOT = Path(__file__).resolve().parent.parent
TEST = json.loads((ROOT / "data" / "sample" / "test.json").read_text(encoding="utf-8"))
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text()
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
                           max_leaves=20)
# Values that look like items, so the fields are reached with every kind of wrong value.
any_or = lambda *good: st.sampled_from(good) | json_values  # noqa: E731
utterances = st.fixed_dictionaries({}, optional={"speaker": any_or(1, 2, "1", 3), "utterance": any_or("안녕", 5, ""),
                                                 "utterance_id": any_or("u1", ["u1", "u2"], 7)})
items_like = st.fixed_dictionaries({}, optional={
    "id": any_or("a", "b", "x\ny: z"),
    "input": st.fixed_dictionaries({}, optional={
        "conversation": st.lists(utterances | json_values, max_size=3) | json_values,
        "reference_id": any_or(["u1"], "u2", []),
        "category": any_or(*CATEGORIES),
        **{k: any_or("보기", "") for k in LABELS},
    }) | json_values,
    "output": any_or(*LABELS, "", None),
})
files = st.lists(items_like | json_values, max_size=5) | json_values


def one_line(problems: list[Problem]) -> None:
    for p in problems:
        assert isinstance(p, Problem) and "\n" not in str(p) and len(str(p)) < 2000


@SETTINGS
@given(files)
def test_parse_items_returns_items_or_problems(data):
    items, problems = parse_items(data, "f.json")
    assert all(isinstance(it, Item) for it in items)
    one_line(problems)


@SETTINGS
@given(st.binary(max_size=300) | files.map(lambda v: json.dumps(v).encode()))
def test_decode_and_load_never_raise_anything_else(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("p") / "f.json"
    path.write_bytes(data)
    try:
        decode_json(data, "f.json")
        items, warnings = load_items(path)
        assert all(isinstance(it, Item) for it in items)
        one_line(warnings)
    except DataError as exc:
        assert exc.problems
        one_line(exc.problems)


@SETTINGS
@given(st.lists(items_like | json_values, max_size=5) | json_values, st.booleans())
def test_check_submission_data_returns_problems(sub, against_itself):
    one_line(check_submission_data(sub, sub if against_itself else TEST, "s.json", "t.json"))


@SETTINGS
@given(st.data())
def test_a_near_miss_submission_is_never_accepted(data):
    """A submission built from real test items but with anything changed gets at least one problem."""
    sub = [dict(t, output=data.draw(st.sampled_from(LABELS))) for t in TEST]
    n = data.draw(st.integers(0, len(sub) - 1))
    key = data.draw(st.sampled_from(["id", "input", "output", "extra"]))
    value = data.draw(json_values)
    if sub[n].get(key) == value:
        return
    sub[n] = {**sub[n], key: value}
    problems = check_submission_data(sub, TEST, "s.json", "t.json")
    assert problems
    one_line(problems)


@SETTINGS
@given(st.binary(max_size=300) | files.map(lambda v: json.dumps(v, ensure_ascii=False).encode()))
def test_check_submission_file_never_raises(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("s") / "s.json"
    path.write_bytes(data)
    one_line(check_submission_file(path, ROOT / "data" / "sample" / "test.json"))
