"""Guards at the start of the competition path: a profile that needs a GPU refuses a machine
without one in one line; partial official files name the missing file; the length check's
tokenizer is fetched for an online profile, and the competition profile stops without it."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from maerak import profiles
from maerak.errors import ConfigError
from maerak.profiles import STAGE_FILES, Profile, auto_profile, get_profile, load_profiles, require_gpu
from preprocessing import config, lengths, prepare

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(profiles, "has_gpu", lambda: False)


def test_needs_gpu_refuses_without_cuda_and_cpu_profiles_pass(no_gpu):
    with pytest.raises(ConfigError, match="needs a CUDA GPU .*needs_gpu: true.*make preflight"):
        require_gpu(get_profile("competition"))
    require_gpu(get_profile("sample"))
    require_gpu(get_profile("official-cpu"))


def test_needs_gpu_passes_with_cuda(monkeypatch):
    from maerak import gpu
    from tests.test_gpu_guards import H100

    monkeypatch.setattr(profiles, "has_gpu", lambda: True)
    monkeypatch.setattr(gpu, "probe", lambda: H100)  # an 80 GB H100 with the cu126 build (tests/test_gpu_guards.py)
    require_gpu(get_profile("competition"))


@pytest.mark.parametrize("entry", ["train", "reproduce"])
def test_train_and_reproduce_stop_at_the_start_with_one_line(entry, no_gpu, monkeypatch, capsys):
    from pipeline import reproduce
    from training import axolotl_run

    def started(*a, **k):
        raise AssertionError("a step started")

    monkeypatch.setattr(axolotl_run, "train", started)
    monkeypatch.setattr(reproduce, "run_steps", started)
    if entry == "train":
        rc = axolotl_run.main(["--stage", "2", "--profile", "competition"])
    else:
        rc = reproduce.main(["--profile", "competition"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1
    assert len(err) == 1 and "needs a CUDA GPU" in err[0], err


def test_partial_official_files_name_the_missing_one(tmp_path):
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    name, why = auto_profile(tmp_path)
    assert name == "sample" and "no official data" in why
    for split in ("train", "test"):
        (raw / f"{split}.json").write_text("[]", encoding="utf-8")
    name, why = auto_profile(tmp_path)
    assert name == "sample" and "dev.json missing" in why and "no official data" not in why, why
    assert "train.json" not in why.split("missing")[0]


def _fake_hub(monkeypatch, cached: bool, reachable: bool):
    """AutoTokenizer.from_pretrained that finds the id in the cache, on the hub, or nowhere."""
    import transformers

    calls = []

    def from_pretrained(ref, local_files_only=False, **kw):
        calls.append(local_files_only)
        if (local_files_only and cached) or (not local_files_only and reachable):
            return f"tokenizer of {ref}"
        raise OSError("no such file" if local_files_only else "connection refused")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", from_pretrained)
    return calls


def test_an_online_profile_fetches_the_length_tokenizer_an_offline_one_does_not(monkeypatch):
    calls = _fake_hub(monkeypatch, cached=False, reachable=True)
    assert lengths.load_tokenizer("google/gemma-2-9b-it", download=True) == ("tokenizer of google/gemma-2-9b-it", "")
    assert calls == [True, False]
    calls.clear()
    tok, why = lengths.load_tokenizer("google/gemma-2-9b-it", download=False)
    assert tok is None and "no such file" in why and calls == [True]


def _competition(tmp_path: Path) -> tuple[Profile, config.SourcesConfig]:
    (tmp_path / "axolotl_configs").mkdir()
    for name in STAGE_FILES.values():
        (tmp_path / "axolotl_configs" / name).write_text(
            (ROOT / "axolotl_configs" / "competition" / name).read_text(encoding="utf-8"), encoding="utf-8")
    settings = dict(load_profiles()["competition"], axolotl_configs="axolotl_configs",
                    sources=str(ROOT / "preprocessing" / "sources.yml"))
    profile = Profile(name="competition", settings=settings, root=tmp_path)
    return profile, config.load_config(profile)


def test_competition_prepare_stops_when_the_tokenizer_can_be_neither_found_nor_fetched(tmp_path, monkeypatch):
    profile, cfg = _competition(tmp_path)
    assert not profile.config.offline and cfg.lengths.on_missing_tokenizer == "stop"
    calls = _fake_hub(monkeypatch, cached=False, reachable=False)
    with pytest.raises(prepare.DataError) as exc:
        prepare.lengths_plan(profile, cfg)
    text = str(exc.value)
    assert "lengths.tokenizer" in text and "google/gemma-2-9b-it" in text and "fetching it failed" in text
    assert "on_missing_tokenizer: stop" in text and calls == [True, False]


def test_competition_prepare_uses_the_fetched_tokenizer(tmp_path, monkeypatch, tiny_model_dir):
    profile, cfg = _competition(tmp_path)
    from transformers import AutoTokenizer

    real = AutoTokenizer.from_pretrained(tiny_model_dir)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained",
                        lambda ref, local_files_only=False, **kw: (_ for _ in ()).throw(OSError("not cached"))
                        if local_files_only else real)
    count, info, line = prepare.lengths_plan(profile, cfg)
    assert count is not None and info["checked"] is True and "google/gemma-2-9b-it" in line
    row = {"instruction": "i", "input": json.dumps("x"), "output": "A"}
    assert count(row) > 3
