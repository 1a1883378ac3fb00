"""Config files are checked where they are read: a broken sources.yml, profiles.yml or
cleaning.yml is one line naming the file and the key (not a traceback, not a silent default)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from maerak.errors import ConfigError
from maerak.profiles import Profile, get_profile
from pipeline.cli import run_verb
from preprocessing.config import load_config, read_config

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "preprocessing" / "sources.yml"


def shipped() -> dict:
    return yaml.safe_load(SOURCES.read_text(encoding="utf-8"))


def broken(tmp_path: Path, edit) -> Path:
    data = shipped()
    edit(data)
    path = tmp_path / "sources.yml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    return path


def one_line(exc: pytest.ExceptionInfo, path: Path, key: str) -> str:
    text = str(exc.value)
    assert "\n" not in text and text.startswith(f"{path}: {key}: "), text
    return text


def test_the_shipped_sources_file_reads_for_every_profile():
    for name in ("sample", "official-cpu", "competition"):
        cfg = load_config(get_profile(name))
        assert [s.name for s in cfg.sources][:2] == ["official", "modu_2023"]
    # the competition's entry in the file's `profiles:` table is merged in; the others keep the base
    assert load_config(get_profile("competition")).distill.enabled is True
    assert load_config(get_profile("competition")).distill.teacher is None
    assert load_config(get_profile("sample")).distill.enabled is False


@pytest.mark.parametrize("edit, key, says", [
    (lambda d: d["dedup"].update(max_distanse=5), "dedup.max_distanse", "unknown key"),
    (lambda d: d.update(dedupe={"enabled": True}), "dedupe", "unknown key"),
    (lambda d: d["dedup"].update(max_distance="5"), "dedup.max_distance", "expected an integer, got text"),
    (lambda d: d["dedup"].update(enabled="yes"), "dedup.enabled", "expected true or false"),
    (lambda d: d["sources"][1].update(stages=2), "sources[modu_2023].stages", "expected a list"),
    (lambda d: d["sources"][3].update(over_length="cut"), "sources[magpie].over_length", "'cut': expected one of"),
    (lambda d: d["sources"][0].update(kind="offical"), "sources[official].kind", "'offical': expected one of"),
    (lambda d: d["sources"][0].pop("paths"), "sources[official].paths", "missing"),
    (lambda d: d["lengths"].update(over_length="cut"), "lengths.over_length", "'cut': expected one of 'stop', 'drop'"),
    (lambda d: d["augment"].update(stage2_orders="cyclc"), "augment", "stage2_orders: 'cyclc': expected one of"),
    (lambda d: d["distill"].update(stages=[3]), "distill", "stages: [3]"),
    (lambda d: d["profiles"]["competition"]["distill"].update(enabeld=True), "profiles.competition.distill.enabeld", "unknown key"),
    (lambda d: d["profiles"]["competition"]["distill"].update(enabled="on"), "profiles.competition.distill.enabled", "expected true or false"),
])
def test_a_bad_key_type_or_value_is_one_line_naming_file_and_key(tmp_path, edit, key, says):
    path = broken(tmp_path, edit)
    with pytest.raises(ConfigError) as exc:
        read_config(path, "sample")  # the override table is checked whichever profile runs
    assert says in one_line(exc, path, key)


def test_a_yaml_syntax_error_in_sources_is_one_line_at_the_cli(tmp_path, capsys):
    path = tmp_path / "sources.yml"
    path.write_text("sources: [\n  - name: official\n", encoding="utf-8")
    assert run_verb("prepare", ["--profile", "sample", "--config", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"prepare: {path}: not readable YAML: "), err


def test_an_unknown_key_in_sources_is_one_line_at_the_cli_and_nothing_is_written(tmp_path, capsys):
    path = broken(tmp_path, lambda d: d.update(dedupe={"enabled": False}))
    profile = get_profile("sample")
    before = sorted(profile.out.rglob("*")) if profile.out.exists() else []
    assert run_verb("prepare", ["--profile", "sample", "--config", str(path), "--quiet"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"prepare: {path}: dedupe: unknown key (expected one of: sources, eval_files, dedup, augment, "
                   "correction, magpie, lengths, distill, magpie_generate, profiles)"]
    assert (sorted(profile.out.rglob("*")) if profile.out.exists() else []) == before


def test_with_settings_checks_the_merged_values_again():
    cfg = load_config(get_profile("sample"))
    assert cfg.with_settings({"dedup": {"max_distance": 3}}).dedup.max_distance == 3
    with pytest.raises(ConfigError, match="dedup.max_distance: expected an integer"):
        cfg.with_settings({"dedup": {"max_distance": 3.5}})


@pytest.mark.parametrize("settings, key, says", [
    ({"data_dir": "data", "scoring": {"mode": "letter"}}, "t.scoring", "mode: 'letter' is not one of letters, options"),
    ({"data_dir": "data", "scoring": {"batch_size": "4"}}, "t.scoring.batch_size", "expected an integer"),
    ({"data_dir": "data", "scoring": {"dtype": "fp16"}}, "t.scoring.dtype", "'fp16': expected one of"),
    ({"data_dir": "data", "ofline": True}, "t.ofline", "unknown key"),
    ({"data_dir": 3}, "t.data_dir", "expected text"),
])
def test_a_bad_profile_setting_is_one_line_naming_file_profile_and_key(settings, key, says):
    with pytest.raises(ConfigError) as exc:
        Profile("t", settings)
    assert says in one_line(exc, Path("profiles.yml"), key)


def test_a_broken_profiles_file_is_one_line_at_the_cli(tmp_path, capsys, monkeypatch):
    import shutil

    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(ROOT / "profiles.yml", root / "profiles.yml")
    text = (root / "profiles.yml").read_text(encoding="utf-8").replace("    tta: none\n", "    tta: nnoe\n", 1)
    (root / "profiles.yml").write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        get_profile("sample", root)  # another profile's typo shows too
    assert str(exc.value) == "profiles.yml: competition.scoring: tta: 'nnoe' is not one of none, cyclic, all"
    with pytest.raises(ConfigError, match="unknown profile 'nope'; profiles.yml has: sample, official-cpu, competition"):
        get_profile("nope")


def test_a_broken_cleaning_file_is_one_line(tmp_path):
    from maerak import clean

    data = yaml.safe_load(clean.RULES_FILE.read_text(encoding="utf-8"))
    for edit, key in ((lambda d: d.update(filler=["음"]), "filler"), (lambda d: d.update(max_jamo_repeat="2"), "max_jamo_repeat"),
                      (lambda d: d.update(stopword_patterns=["("]), "stopword_patterns[0]")):
        bad = dict(data)
        edit(bad)
        path = tmp_path / "cleaning.yml"
        path.write_text(yaml.safe_dump(bad, allow_unicode=True), encoding="utf-8")
        with pytest.raises(ConfigError) as exc:
            clean.load_rules(path)
        one_line(exc, path, key)
    path.write_text("stopwords: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not readable YAML"):
        clean.load_rules(path)


def test_the_config_objects_are_frozen():
    cfg = load_config(get_profile("sample"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.dedup.max_distance = 1  # type: ignore[misc]
