"""The append-only JSONL caches (scoring, distillation) survive an interrupted write."""
from __future__ import annotations

from maerak.files import append_jsonl, read_keyed_jsonl


def test_rows_appended_after_a_torn_line_are_not_lost(tmp_path):
    path = tmp_path / "cache.jsonl"
    append_jsonl(path, [{"key": "a", "v": 1}])
    with open(path, "ab") as fh:
        fh.write(b'{"key": "b", "v"')  # killed mid-write
    append_jsonl(path, [{"key": "c", "v": 3}])
    rows = read_keyed_jsonl(path)
    assert rows == {"a": {"key": "a", "v": 1}, "c": {"key": "c", "v": 3}}


def test_missing_cache_reads_empty(tmp_path):
    assert read_keyed_jsonl(tmp_path / "none.jsonl") == {}
    append_jsonl(tmp_path / "sub" / "x.jsonl", [])
    assert not (tmp_path / "sub" / "x.jsonl").exists()
