"""Stage YAML keys are checked against the pinned Axolotl's own config schema before training:
a misspelled key is refused in one line naming the file and the key; every shipped YAML passes."""
from __future__ import annotations

import pytest
import yaml

from maerak.errors import ConfigError
from maerak.profiles import ROOT, Profile
from tests.conftest import write_stage_configs
from training.stage_keys import unknown_keys

SHIPPED = sorted((ROOT / "axolotl_configs").glob("*/stage*.yml"))


def load(path):
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def test_there_are_shipped_stage_yamls():
    assert len(SHIPPED) == 9


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_stage_yaml_has_only_keys_axolotl_accepts(path):
    assert unknown_keys(load(path)) == []


def test_the_preflights_overrides_are_keys_axolotl_accepts():
    pre = load(ROOT / "axolotl_configs" / "preflight.yml")
    sections = [s for s in ("stages", "stage1", "stage2", "stage3", "gpus") if s in pre]
    assert "stages" in sections and "gpus" in sections
    for section in sections:
        assert unknown_keys(pre[section]) == [], section


def test_unknown_keys_are_found_at_the_top_and_in_datasets():
    cfg = load(ROOT / "axolotl_configs" / "sample" / "stage1_qlora.yml")
    cfg["learning_rat"] = 5
    cfg["datasets"] = [{**cfg["datasets"][0], "typ": "alpaca"}]
    assert unknown_keys(cfg) == ["learning_rat", "datasets[0].typ"]
    orpo = load(ROOT / "axolotl_configs" / "sample" / "stage3_orpo.yml")
    assert unknown_keys({**orpo, "orpo_alpah": 0.1}) == ["orpo_alpah"]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_a_misspelled_key_is_refused_before_training(tmp_path, monkeypatch, stage):
    from training import axolotl_run as ar

    monkeypatch.setattr(ar, "run", lambda *a, **k: pytest.fail("Axolotl was launched"))
    profile = Profile(name="p", root=tmp_path, settings={"data_dir": "data", "axolotl_configs": "cfg", "preference": True})
    stages = {n: load(ROOT / "axolotl_configs" / "sample" / name)
              for n, name in ((1, "stage1_qlora.yml"), (2, "stage2_full.yml"), (3, "stage3_orpo.yml"))}
    stages[stage]["learning_rat"] = 5
    write_stage_configs(profile, stages[1], stages[2], base_model="model", stage3=stages[3])
    with pytest.raises(ConfigError) as exc:
        ar.train(profile, stage)
    message = str(exc.value)
    assert len(message.splitlines()) == 1
    assert message.startswith(f"{profile.axolotl_config(stage)}: learning_rat: not a key Axolotl ")
    assert "did you mean `learning_rate`?" in message
    assert not (tmp_path / "outputs" / "p" / f"stage{stage}").exists() or not any(
        (tmp_path / "outputs" / "p" / f"stage{stage}").iterdir())


def test_the_train_verb_prints_one_line_and_exits_1(tmp_path, monkeypatch, capsys):
    from training import axolotl_run as ar

    profile = Profile(name="p", root=tmp_path, settings={"data_dir": "data", "axolotl_configs": "cfg"})
    stages = [load(ROOT / "axolotl_configs" / "sample" / n) for n in ("stage1_qlora.yml", "stage2_full.yml")]
    write_stage_configs(profile, {**stages[0], "learning_rat": 5}, stages[1], base_model="model")
    monkeypatch.setattr(ar, "resolve_profile", lambda name: (profile, "test"))
    monkeypatch.setattr(ar, "run", lambda *a, **k: pytest.fail("Axolotl was launched"))
    assert ar.main(["--stage", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "stage1_qlora.yml: learning_rat: not a key Axolotl" in err[0]
