"""prepare end to end on the sample data, in a temporary root (no writes into the repo)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from maerak.files import read_jsonl
from maerak.modes import LETTERS_MODE, OPTIONS_MODE, prepared_mode
from maerak.profiles import Profile
from maerak.prompt import CYCLIC_ORDERS, LETTERS, OPTIONS_INSTRUCTION, option_row
from maerak.schema import DataError, load_items
from preprocessing import augment, config, prepare

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def env(tmp_path, sample_dir):
    data = tmp_path / "data"
    shutil.copytree(sample_dir, data)
    (tmp_path / "data" / "external").mkdir()
    profile = Profile(name="t", settings={"data_dir": "data",
                                         "sources": str(ROOT / "preprocessing" / "sources.yml")}, root=tmp_path)
    cfg = config.load_config(profile)
    return profile, cfg


def ext(profile, sub, name, text):
    path = profile.root / "data" / "external" / sub / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def accounted(report):
    d = report.as_dict()
    for name, src in d["sources"].items():
        for st in src["steps"]:
            assert st["in"] == st["out"] + len(st["dropped"]), (name, st["step"])
            assert all(x["id"] and x["reason"] for x in st["dropped"])
    return d


def test_sample_profile_writes_both_stages(env):
    profile, cfg = env
    report = prepare.run(profile, cfg, progress=False)
    d = accounted(report)
    s1, s2 = read_jsonl(profile.prepared / "stage1.jsonl"), read_jsonl(profile.prepared / "stage2.jsonl")
    assert len(s1) == 60 and len(s2) == 180  # official in stage 1 (identity) and 2 (cyclic)
    assert all(set(r) == {"instruction", "input", "output"} for r in s1 + s2)
    assert (profile.prepared / "report.json").exists() and (profile.prepared / "report.md").exists()
    assert d["stages"]["stage2"]["by_source"]["official"] == 180
    assert "지훈아" in "".join(r["input"] for r in s2) and "name1" not in "".join(r["input"] for r in s2)
    assert d["mode"] == "letters"  # recorded with the stage-2 checkpoint after training
    assert prepared_mode(profile.prepared / "report.json") is LETTERS_MODE


def test_options_mode_rows_and_what_it_makes_of_the_orders(tmp_path, sample_dir):
    """Options-mode rows show no options: one row per item whatever augment.stage2_orders says, and
    the report says so (not silently); the report records the mode."""
    shutil.copytree(sample_dir, tmp_path / "data")
    profile = Profile(name="t", root=tmp_path, settings={
        "data_dir": "data", "sources": str(ROOT / "preprocessing" / "sources.yml"),
        "scoring": {"mode": "options"}})
    report = prepare.run(profile, config.load_config(profile), progress=False)
    d = accounted(report)
    s2 = read_jsonl(profile.prepared / "stage2.jsonl")
    items, _ = load_items(sample_dir / "train.json")
    assert len(s2) == len(items) and d["mode"] == "options"  # official is cyclic-augmented in letters mode
    assert [r["output"] for r in s2] == [option_row(it)["output"] for it in items]
    assert all(r["instruction"] == OPTIONS_INSTRUCTION and "[Option]" not in r["input"] for r in s2)
    notes = [n for st in d["sources"]["official"]["steps"] if st["step"] == "format" for n in st["notes"]]
    assert any("augment.stage2_orders" in n and "one row per item" in n for n in notes), notes
    assert prepared_mode(profile.prepared / "report.json") is OPTIONS_MODE


def test_rationale_rows_put_the_answer_first_in_both_modes(sample_dir):
    items, _ = load_items(sample_dir / "train.json")
    rationales = {items[0].id: "화자1이 직접 말했다.", items[1].id: ""}  # an empty rationale makes no row
    letters = LETTERS_MODE.training_rows(items[:2], "cyclic", rationales)
    options = OPTIONS_MODE.training_rows(items[:2], "cyclic", rationales)
    assert [r.tag for r in letters] == [t + "+rationale" for t in ("order 123", "order 231", "order 312")]
    assert all(r.row["output"].split("\n")[0] in LETTERS for r in letters)
    assert [r.tag for r in options] == ["option+rationale"]
    gold = items[0].options[items[0].label_index]
    assert options[0].row["output"] == f"{gold}\n근거: 화자1이 직접 말했다."


def test_external_sources_dedup_and_contamination(env):
    profile, cfg = env
    train = json.loads((profile.root / "data" / "train.json").read_text(encoding="utf-8"))
    dev = json.loads((profile.root / "data" / "dev.json").read_text(encoding="utf-8"))
    dup = json.loads(json.dumps(train[7]))
    dup["id"] = "modu-dup"
    dup["input"]["conversation"][2]["utterance"] += "!!"      # near-duplicate of official train item
    leak = json.loads(json.dumps(dev[2]))
    leak["id"] = "modu-leak"                                   # copy of a dev item
    fresh = json.loads(json.dumps(train[0]))
    fresh["id"] = "modu-fresh"
    fresh["input"]["category"] = "반응"
    fresh["input"]["inference_1"], fresh["input"]["inference_2"], fresh["input"]["inference_3"] = (
        "화자2는 바로 돕겠다고 나섰다.", "화자2는 이사 소식에 화를 냈다.", "화자2는 대답하지 않았다.")
    ext(profile, "modu_2023", "modu.json", json.dumps([dup, leak, fresh], ensure_ascii=False))
    ext(profile, "correction", "pairs.csv", "source,corrected\n안 되 요,안 돼요\n,빈칸\n")
    ext(profile, "magpie", "m.jsonl", json.dumps({"conversations": [{"from": "human", "value": "질문"}, {"from": "gpt", "value": "답"}]}, ensure_ascii=False) + "\n"
        + json.dumps({"instruction": "", "response": "x"}) + "\n")
    report = prepare.run(profile, cfg, progress=False)
    d = accounted(report)
    steps = {st["step"]: st for st in d["sources"]["modu_2023"]["steps"]}
    assert [x["id"] for x in steps["dedup"]["dropped"]] == ["modu-dup"]
    assert "official:" in steps["dedup"]["dropped"][0]["reason"]
    assert [x["id"] for x in steps["contamination"]["dropped"]] == ["modu-leak"]
    assert steps["format"]["out"] == 1
    assert any(c["train"] == "modu_2023:modu-leak" and c["eval"].startswith("dev:") for c in d["contamination"]["near_duplicates"])
    # eval files are never touched
    assert json.loads((profile.root / "data" / "dev.json").read_text(encoding="utf-8")) == dev
    corr = {st["step"]: st for st in d["sources"]["correction"]["steps"]}
    assert corr["load"]["in"] == 2 and corr["load"]["dropped"][0]["id"] == "pairs.csv:row 2"
    assert d["stages"]["stage1"]["by_source"] == {"official": 60, "correction": 1, "magpie": 1, "magpie_generated": 0}


def test_official_items_sharing_a_conversation_all_stay(env):
    profile, cfg = env
    d = prepare.run(profile, cfg, progress=False).as_dict()
    items, _ = load_items(profile.root / "data" / "train.json")
    assert len({it.conversation_key for it in items}) < len(items)
    assert all(st["dropped_count"] == 0 for st in d["sources"]["official"]["steps"])


@pytest.mark.parametrize("name, text, where", [
    ("pairs.csv", "wrong,columns\na,b\n", "row 0 (header): source"),
    ("pairs.jsonl", '{"source": "a", "corrected": "b"}\n{"src": "a", "corrected": "b"}\n', "row 2: source"),
    ("pairs.jsonl", "", "-: file: empty"),
    ("pairs.jsonl", '{"source": "a", "corrected": "b"}\n{"source": \n', "row 2: line"),
])
def test_bad_correction_file_names_file_row_and_field(env, name, text, where):
    profile, cfg = env
    path = ext(profile, "correction", name, text)
    with pytest.raises(DataError) as exc:
        prepare.run(profile, cfg, progress=False)
    assert f"{path}: {where}" in str(exc.value)
    assert not profile.prepared.exists()  # nothing half-written


def test_bad_magpie_file(env):
    profile, cfg = env
    path = ext(profile, "magpie", "m.jsonl", json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(DataError) as exc:
        prepare.run(profile, cfg, progress=False)
    assert str(path) in str(exc.value) and "columns" in str(exc.value)
    assert not profile.prepared.exists()


def test_bad_items_file_names_item_and_field(env, fixtures_dir):
    profile, cfg = env
    ext(profile, "modu_2023", "bad.json", (fixtures_dir / "bad_label.json").read_text(encoding="utf-8-sig"))
    with pytest.raises(DataError) as exc:
        prepare.run(profile, cfg, progress=False)
    assert "bad.json" in str(exc.value) and "output" in str(exc.value)


def test_option_permutation_moves_the_answer_letter(sample_dir):
    items, _ = load_items(sample_dir / "train.json")
    item = items[0]
    rows = [t.row for t in augment.tagged_task_rows("official", [item], LETTERS_MODE, "cyclic")]
    assert len(rows) == 3
    correct = item.options[item.label_index]
    for row, order in zip(rows, CYCLIC_ORDERS):
        letter = row["output"]
        assert f"\n{letter}. {correct}" in row["input"] or row["input"].endswith(f"{letter}. {correct}")
        assert order[LETTERS.index(letter)] == item.label_index
    assert sorted(r["output"] for r in rows) == ["A", "B", "C"]
    assert len(LETTERS_MODE.training_rows([item], "all")) == 6 and len(LETTERS_MODE.training_rows([item], "none")) == 1


def test_main_reports_bad_file_and_exits_nonzero(env, monkeypatch, capsys):
    profile, cfg = env
    ext(profile, "correction", "pairs.csv", "")
    monkeypatch.setattr(prepare, "resolve_profile", lambda name: (profile, "test"))
    monkeypatch.setattr(prepare, "load_config", lambda p, path=None: cfg)
    assert prepare.main(["--profile", "t", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "pairs.csv" in err and "nothing written" in err
    assert prepare.main(["--profile", "t", "--quiet"]) == 1
    (profile.root / "data" / "external" / "correction" / "pairs.csv").unlink()
    assert prepare.main(["--profile", "t", "--quiet"]) == 0
    assert (profile.prepared / "stage1.jsonl").exists()


def test_missing_sources_config_is_a_clear_error(tmp_path):
    from maerak.errors import ConfigError
    from maerak.profiles import get_profile
    from preprocessing.config import load_config

    with pytest.raises(ConfigError) as exc:
        load_config(get_profile("sample"), tmp_path / "nope.yml")
    assert "nope.yml: -: file: no such sources config" in str(exc.value)
