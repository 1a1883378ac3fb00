"""The append-only JSONL caches (scoring, distillation) survive an interrupted write."""
from __future__ import annotations

import pytest
import yaml

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


def test_a_config_that_is_missing_broken_or_not_a_mapping_is_one_line_naming_the_file(tmp_path):
    import pytest

    from maerak.files import ConfigError, load_yaml

    bad = {"missing.yml": None, "broken.yml": "a: [1, 2\n", "list.yml": "- 1\n", "latin1.yml": b"a: \xe9\n"}
    for name, text in bad.items():
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        elif text is not None:
            path.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError) as exc:
            load_yaml(path, "stage config")
        assert str(exc.value).startswith(f"{path}: ") and "\n" not in str(exc.value), name
    (tmp_path / "ok.yml").write_text("a: 1\n", encoding="utf-8")
    assert load_yaml(tmp_path / "ok.yml") == {"a": 1}


def test_yaml_merge_keys_still_work_and_an_explicit_key_overrides_the_anchor():
    """profiles.yml builds competition-orpo with `<<: *competition`; the duplicate-key check must
    count only keys written in the mapping itself, not the ones merged in."""
    from maerak.files import parse_yaml

    data = parse_yaml("a: &base {k: 1, j: 2}\nb:\n  <<: *base\n  k: 3\n")
    assert data["b"] == {"k": 3, "j": 2}
    with pytest.raises(yaml.YAMLError, match="given twice"):
        parse_yaml("b:\n  k: 1\n  k: 2\n")
