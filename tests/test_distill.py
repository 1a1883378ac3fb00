"""Distillation cache and plumbing (fake teacher; the tests' tiny model for the real classes)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from maerak.files import read_jsonl
from maerak.profiles import Profile
from maerak.schema import load_items
from preprocessing import config, distill, magpie, prepare

ROOT = Path(__file__).resolve().parent.parent


class FakeTeacher:
    def __init__(self, name="fake", text="대화에서 화자가 그렇게 말했기 때문이다. 둘째 문장. 셋째 문장."):
        self.name, self.text, self.calls, self.prompts = name, text, 0, 0

    def generate(self, prompts):
        self.calls += 1
        self.prompts += len(prompts)
        return [self.text for _ in prompts]


def test_second_run_calls_the_teacher_zero_times(tmp_path, sample_dir):
    items, _ = load_items(sample_dir / "train.json")
    cache = tmp_path / "cache.jsonl"
    t1 = FakeTeacher()
    out1, stats1 = distill.distill(items[:10], t1, cache, batch_size=4, progress=False)
    assert t1.calls == 3 and t1.prompts == 10 and stats1["generated"] == 10
    t2 = FakeTeacher()
    out2, stats2 = distill.distill(items[:10], t2, cache, batch_size=4, progress=False)
    assert t2.calls == 0 and stats2["cached"] == 10 and out2 == out1
    assert out1[items[0].id] == "대화에서 화자가 그렇게 말했기 때문이다. 둘째 문장."  # tidied to two sentences
    # a different teacher, or a changed item, is a cache miss; only the new work is done
    t3 = FakeTeacher(name="other")
    distill.distill(items[:2], t3, cache, progress=False)
    assert t3.prompts == 2
    t4 = FakeTeacher()
    distill.distill(items[:12], t4, cache, progress=False)
    assert t4.prompts == 2


def test_torn_cache_line_is_ignored(tmp_path, sample_dir):
    items, _ = load_items(sample_dir / "train.json")
    cache = tmp_path / "cache.jsonl"
    distill.distill(items[:3], FakeTeacher(), cache, progress=False)
    with open(cache, "a", encoding="utf-8") as fh:
        fh.write('{"key": "trunc')
    t = FakeTeacher()
    distill.distill(items[:3], t, cache, progress=False)
    assert t.calls == 0


def test_prepare_adds_rationale_rows(tmp_path, sample_dir):
    shutil.copytree(sample_dir, tmp_path / "data")
    profile = Profile(name="t", settings={"data_dir": "data",
                                         "sources": str(ROOT / "preprocessing" / "sources.yml")}, root=tmp_path)
    cfg = config.load_config(profile)
    teacher = FakeTeacher()
    d = prepare.run(profile, cfg, teacher=teacher, distill_on=True, progress=False).as_dict()
    rows = read_jsonl(profile.prepared / "stage2.jsonl")
    with_r = [r for r in rows if "\n근거: " in r["output"]]
    assert len(rows) == 240 and len(with_r) == 60 and d["distill"]["generated"] == 60
    assert all(r["output"][0] in "ABC" for r in with_r)
    teacher2 = FakeTeacher()
    prepare.run(profile, cfg, teacher=teacher2, distill_on=True, progress=False)
    assert teacher2.calls == 0
    assert read_jsonl(profile.prepared / "stage2.jsonl") == rows


def test_transformers_teacher_on_tiny_model(tiny_model_dir, tmp_path, sample_dir):
    items, _ = load_items(sample_dir / "train.json")
    teacher = distill.load_teacher(tiny_model_dir, max_new_tokens=4)
    out, stats = distill.distill(items[:2], teacher, tmp_path / "c.jsonl", batch_size=2, progress=False)
    assert stats["teacher_calls"] == 1 and set(out) == {items[0].id, items[1].id}
    assert len(read_jsonl(tmp_path / "c.jsonl")) == 2


def test_missing_teacher_is_a_clear_error(tmp_path):
    from maerak.errors import ConfigError

    with pytest.raises(ConfigError, match="no such model directory"):
        distill.load_teacher(tmp_path / "nope")


def test_magpie_generation_on_tiny_model_is_a_loadable_source(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert magpie.pre_query_template(tok) == "<bos><start_of_turn>user\n"
    out = tmp_path / "magpie" / "generated.jsonl"
    cfg = config.MagpieGenerate(count=2, max_instruction_tokens=6, max_response_tokens=6, temperature=1.0, seed=1)
    assert magpie.run(tiny_model_dir, out, cfg, progress=False)["generated"] == 2
    assert magpie.run(tiny_model_dir, out, cfg, progress=False)["generated"] == 0  # reused
    rows = read_jsonl(out)
    assert len(rows) == 2 and rows[0]["conversations"][0]["from"] == "human"
    from preprocessing.sources import Loaded, load_magpie_file

    loaded = Loaded("g", "magpie", (1,))
    load_magpie_file(out, "g", loaded, config.load_config(Profile("t", {"sources": str(ROOT / "preprocessing" / "sources.yml")})).magpie)
    assert loaded.raw_count == 2 and len(loaded.records) + len(loaded.dropped) == 2


def test_pre_query_template_with_a_chat_template():
    class Tok:
        chat_template = "x"
        bos_token = "<bos>"

        def apply_chat_template(self, messages, tokenize=False):
            return "<bos><start_of_turn>user\n" + messages[0]["content"] + "<end_of_turn>\n"

    assert magpie.pre_query_template(Tok()) == "<bos><start_of_turn>user\n"
    assert json.dumps(magpie.cut("질문입니다<end_of_turn>\n쓰레기")) == json.dumps("질문입니다")
