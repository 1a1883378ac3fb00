"""prepare on real-format (quirky) files with the competition profile's sources settings and no
teacher; token lengths counted as Axolotl counts them, against the stage YAMLs' sequence_len."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from maerak import clean
from maerak.files import read_jsonl
from maerak.profiles import Profile, load_profiles
from maerak.prompt import render_prompt
from maerak.schema import DataError, load_items
from preprocessing import config, prepare

ROOT = Path(__file__).resolve().parent.parent


def write_stage_configs(root: Path, seq1: int, seq2: int) -> None:
    for name, seq in (("stage1_qlora.yml", seq1), ("stage2_full.yml", seq2)):
        text = (ROOT / "axolotl_configs" / "competition" / name).read_text(encoding="utf-8")
        lines = [f"sequence_len: {seq}" if line.startswith("sequence_len:") else line for line in text.splitlines()]
        (root / "axolotl_configs" / name).write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture
def quirky(tmp_path, fixtures_dir, sample_dir, tiny_model_dir):
    """A competition-like root: quirky official train (BOM, CRLF, int/empty utterances), the
    refined variant as an external set, the competition's sources.yml overrides (distill on,
    no teacher), and the tests' tiny tokenizer in place of gemma-2's."""
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    shutil.copy(fixtures_dir / "quirks_valid.json", raw / "train.json")
    shutil.copy(sample_dir / "dev.json", raw / "dev.json")
    shutil.copy(fixtures_dir / "quirks_test.json", raw / "test.json")
    modu = tmp_path / "data" / "external" / "modu_2023"
    modu.mkdir(parents=True)
    shutil.copy(fixtures_dir / "quirks_refined.json", modu / "refined.json")
    (tmp_path / "axolotl_configs").mkdir()
    # the SFT stages' rows (stage 3's pairs are checked in tests/test_orpo.py)
    settings = dict(load_profiles()["competition"], axolotl_configs="axolotl_configs",
                    sources=str(ROOT / "preprocessing" / "sources.yml"), preference=False)
    profile = Profile(name="competition", settings=settings, root=tmp_path)
    cfg = config.load_config(profile)
    cfg = cfg.with_settings({"lengths": {"tokenizer": str(tiny_model_dir)}})
    return profile, cfg


def axolotl_lengths(tokenizer, items, order=(0, 1, 2)) -> dict[str, int]:
    """Independent count: our prompt with BOS, the answer letter without BOS, and EOS."""
    out = {}
    for it in items:
        letter = "ABC"[list(order).index(it.label_index)]
        answer = [t for t in tokenizer(letter)["input_ids"] if t != tokenizer.bos_token_id]
        out[it.id] = len(tokenizer(render_prompt(it, order))["input_ids"]) + len(answer) + 1
    return out


def cleaned(items):
    """The items as prepare formats them (cleaning drops empty turns and fills name placeholders)."""
    rules = clean.load_rules(ROOT / "maerak" / "cleaning.yml")
    return [clean.clean_item(it, rules).item for it in items]


def all_items(profile):
    return cleaned(load_items(profile.root / "data" / "raw" / "train.json")[0]
                   + load_items(profile.root / "data" / "external" / "modu_2023" / "refined.json")[0])


def test_no_teacher_quirky_files_write_stages_and_report_every_item_and_outlier(quirky, tiny_model_dir):
    from transformers import AutoTokenizer

    profile, cfg = quirky
    assert cfg.distill.enabled and not cfg.distill.teacher  # the competition setting
    counts = axolotl_lengths(AutoTokenizer.from_pretrained(tiny_model_dir), all_items(profile))
    assert len(set(counts.values())) > 1
    limit = sorted(counts.values())[len(counts) // 2]          # some rows over, some not
    write_stage_configs(profile.root, 4096, limit)
    cfg = cfg.with_settings({"lengths": {"over_length": "drop"}})
    said: list[str] = []
    d = prepare.run(profile, cfg, progress=False, say=said.append).as_dict()

    # the first lines say there is no teacher and what the lengths are checked against
    assert "distillation: OFF: no teacher" in said[0] and "token lengths:" in said[1] and f"sequence_len {limit}" in said[1]
    assert d["notices"] == [s.removeprefix("prepare: ") for s in said]
    assert d["distill"]["status"] == "off"
    md = (profile.prepared / "report.md").read_text(encoding="utf-8")
    assert "no teacher" in md.split("\n## ")[0]
    # every item is accounted for, per source and step
    for name, n in (("official", 2), ("modu_2023", 2)):
        steps = d["sources"][name]["steps"]
        assert steps[0]["in"] == n
        for st in steps:
            assert st["in"] == st["out"] + st["dropped_count"]
    # every stage-2 row over the limit is listed with its id and exact length, and dropped
    over = d["token_lengths"]["stages"]["stage2"]["over"]
    expected = {iid: n for iid, n in counts.items() if n > limit}
    assert expected and {o["id"] for o in over} == set(expected)
    assert len(over) == 3 * len(expected)  # cyclic: three orders per item, all over
    ident = [o for o in over if o["row"] == "order 123"]
    assert {o["id"]: o["tokens"] for o in ident} == expected
    assert all(o["action"] == "dropped" and o["sequence_len"] == limit for o in over)
    assert d["token_lengths"]["stages"]["stage1"]["over"] == []
    s1, s2 = read_jsonl(profile.prepared / "stage1.jsonl"), read_jsonl(profile.prepared / "stage2.jsonl")
    assert len(s1) == 2 and len(s2) == 3 * (4 - len(expected))
    assert d["stages"]["stage2"]["rows"] == len(s2)
    dist = d["token_lengths"]["stages"]["stage2"]["by_source"]
    assert dist["official"]["rows"] + dist["modu_2023"]["rows"] == 12
    assert max(dist["official"]["max"], dist["modu_2023"]["max"]) == max(counts.values())
    # an item whose every row is over is dropped at the length step, with the reason
    length_drops = {x["id"] for s in d["sources"].values() for st in s["steps"] if st["step"] == "length" for x in st["dropped"]}
    # (official items keep their stage-1 rows, sequence_len 4096 there; modu_2023 is stage 2 only)
    assert length_drops == {i for i in expected if i.startswith("fixture-quirks-refined")}
    source_of = {it.id: "official" if it.id.startswith("fixture-quirks-valid") else "modu_2023" for it in all_items(profile)}
    assert all(f"`{source_of[i]}:{i}` (order 123): {n} tokens > {limit}" in md for i, n in expected.items())


def test_over_length_stops_by_default_naming_file_item_and_length(quirky, tiny_model_dir):
    from transformers import AutoTokenizer

    profile, cfg = quirky
    counts = axolotl_lengths(AutoTokenizer.from_pretrained(tiny_model_dir), all_items(profile)[:2])  # official
    longest = max(counts, key=counts.get)
    write_stage_configs(profile.root, counts[longest] - 1, 4096)
    with pytest.raises(DataError) as exc:
        prepare.run(profile, cfg, progress=False, say=lambda s: None)
    lines = [str(p) for p in exc.value.problems]
    assert lines and all(": tokens: " in x for x in lines)
    hit = next(x for x in lines if f"official:{longest}:" in x)
    assert hit.startswith("data/raw/train.json: ")
    assert f"is {counts[longest]} tokens, over sequence_len {counts[longest] - 1}" in hit and "stage1_qlora.yml" in hit
    assert not profile.prepared.exists()


def test_our_over_length_rows_are_exactly_the_rows_axolotl_drops(quirky, tiny_model_dir):
    """Tokenize the written rows with Axolotl's own strategy at the real sequence_len and run its
    own length filter: it keeps every row prepare kept (prepare already dropped the rest)."""
    from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
    from axolotl.prompters import AlpacaPrompter
    from axolotl.utils.trainer import filter_sequences_by_length
    from transformers import AutoTokenizer

    profile, cfg = quirky
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    counts = axolotl_lengths(tok, all_items(profile))
    limit = sorted(counts.values())[len(counts) // 2]
    write_stage_configs(profile.root, 4096, 4096)
    cfg = cfg.with_settings({"lengths": {"over_length": "drop"}})
    prepare.run(profile, cfg, progress=False, say=lambda s: None)
    every = read_jsonl(profile.prepared / "stage2.jsonl")
    write_stage_configs(profile.root, 4096, limit)
    d = prepare.run(profile, cfg, progress=False, say=lambda s: None).as_dict()
    kept = read_jsonl(profile.prepared / "stage2.jsonl")
    strategy = AlpacaPromptTokenizingStrategy(AlpacaPrompter("instruct"), tok, False, limit)
    axolotl_keeps = [r for r in every if filter_sequences_by_length(strategy.tokenize_prompt(r), limit)]
    assert kept == axolotl_keeps and len(kept) < len(every)
    assert len(every) - len(kept) == len(d["token_lengths"]["stages"]["stage2"]["over"])


def test_missing_tokenizer_is_said_first_or_stops_per_setting(quirky, tmp_path):
    profile, cfg = quirky
    write_stage_configs(profile.root, 4096, 4096)
    cfg = cfg.with_settings({"lengths": {"tokenizer": str(tmp_path / "no-such-tokenizer"), "on_missing_tokenizer": "skip"}})
    said: list[str] = []
    d = prepare.run(profile, cfg, progress=False, say=said.append).as_dict()
    assert "token lengths: NOT CHECKED" in said[1] and "no-such-tokenizer" in said[1]
    assert d["token_lengths"]["checked"] is False
    assert "Not checked" in (profile.prepared / "report.md").read_text(encoding="utf-8")
    shutil.rmtree(profile.prepared)
    cfg = cfg.with_settings({"lengths": {"on_missing_tokenizer": "stop"}})
    with pytest.raises(DataError, match="lengths.tokenizer"):
        prepare.run(profile, cfg, progress=False, say=said.append)
    assert not profile.prepared.exists()


def test_teacher_set_but_absent_or_distill_forced_without_one_is_a_clear_error(quirky):
    profile, cfg = quirky
    write_stage_configs(profile.root, 4096, 4096)
    with pytest.raises(DataError) as exc:
        prepare.run(profile, cfg, distill_on=True, progress=False, say=lambda s: None)
    assert "distill.teacher" in str(exc.value) and "--distill needs a teacher" in str(exc.value)
    cfg = cfg.with_settings({"distill": {"teacher": "models/teacher"}})
    with pytest.raises(DataError) as exc:
        prepare.run(profile, cfg, progress=False, say=lambda s: None)
    assert "distill.teacher" in str(exc.value) and "no such model directory" in str(exc.value)
    assert "./run.sh model" not in str(exc.value)
    assert not profile.prepared.exists()


def test_competition_prepare_main_without_teacher_says_so_first(quirky, monkeypatch, capsys):
    profile, cfg = quirky
    write_stage_configs(profile.root, 4096, 4096)
    monkeypatch.setattr(prepare, "resolve_profile", lambda name: (profile, "test"))
    monkeypatch.setattr(prepare, "load_config", lambda p, path=None: cfg)
    assert prepare.main(["--profile", "competition", "--quiet"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("prepare: distillation: OFF: no teacher")
    assert out[1].startswith("prepare: token lengths:")
    report = json.loads((profile.prepared / "report.json").read_text(encoding="utf-8"))
    assert report["stages"]["stage2"]["rows"] == 12
