"""The user's entry points: run.sh verbs, make help, and the reproduce plan."""
from __future__ import annotations

import subprocess
from pathlib import Path

from maerak.profiles import auto_profile, get_profile
from pipeline.cli import VERBS
from pipeline.reproduce import plan

ROOT = Path(__file__).resolve().parent.parent


def test_run_sh_help_lists_every_verb():
    out = subprocess.run(["./run.sh", "--help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for verb in VERBS:
        assert f"  {verb} " in out


def test_run_sh_unknown_verb_fails():
    res = subprocess.run(["./run.sh", "fly"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 2 and "unknown verb 'fly'" in res.stderr


def test_every_verb_module_has_main():
    import importlib

    for verb, spec in VERBS.items():
        assert callable(getattr(importlib.import_module(spec.module), "main", None)), verb


def test_make_help_lists_the_pipeline_targets():
    out = subprocess.run(["make", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for target in ("reproduce", "test", "setup", "validate", "prepare", "train-stage1", "merge", "train-stage2", "submit", "evaluate", "verify", "bench"):
        assert f"  {target} " in out


def test_make_targets_and_reproduce_steps_come_from_the_one_verb_table():
    names = subprocess.run(["make", "-pn", "help"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    line = next(x for x in names.splitlines() if x.startswith("VERBS := "))
    assert line.split(":= ", 1)[1].split() == list(VERBS)
    assert all(s.verb in VERBS for p in ("sample", "competition") for s in plan(get_profile(p)))


def test_reproduce_plan_runs_the_recipe_in_order():
    steps = [s.name for s in plan(get_profile("sample"))]
    assert steps == ["model", "validate", "prepare", "train-stage1", "merge", "train-stage2", "train-stage3",
                     "submit", "predict-dev", "evaluate"]  # stage 3: ORPO (profiles.yml preference: true)
    # The competition profile downloads nothing itself: no embedded-model step.
    assert [s.name for s in plan(get_profile("competition"))][0] == "validate"


def test_auto_profile_is_sample_without_official_data(tmp_path, monkeypatch):
    import maerak.profiles

    (tmp_path / "data" / "raw").mkdir(parents=True)
    name, why = auto_profile(tmp_path)
    assert name == "sample" and "no official data" in why
    for split in ("train", "dev", "test"):
        (tmp_path / "data" / "raw" / f"{split}.json").write_text("[]")
    monkeypatch.setattr(maerak.profiles, "has_gpu", lambda: False)
    name, why = auto_profile(tmp_path)
    assert name == "official-cpu" and "no CUDA GPU" in why
    assert get_profile(name).scoring_mode == "options" and get_profile(name).split_file("dev").parent.name == "raw"
    monkeypatch.setattr(maerak.profiles, "has_gpu", lambda: True)
    assert auto_profile(tmp_path)[0] == "competition"
    assert get_profile("competition").scoring_mode == "letters"


class _Resolved(Exception):
    pass


def test_every_verb_takes_its_default_profile_from_the_one_resolver(monkeypatch):
    """No verb has its own default: without --profile each asks maerak.profiles.auto_profile."""
    import importlib

    import maerak.profiles

    def chosen(root=None):
        raise _Resolved

    monkeypatch.setattr(maerak.profiles, "auto_profile", chosen)
    argv = {"train": ["--stage", "1"]}
    for verb, spec in VERBS.items():
        # check-submission takes files, not a profile; preflight exists to run the competition
        # configs on a CPU, where the automatic choice would be sample, so it defaults to competition.
        if verb in ("check-submission", "preflight"):
            continue
        main = importlib.import_module(spec.module).main
        try:
            main([*spec.args, *argv.get(verb, [])])
        except _Resolved:
            continue
        raise AssertionError(f"./run.sh {verb} chose a profile without the resolver")


def test_resolver_says_why(tmp_path, capsys):
    from maerak.profiles import resolve_profile

    (tmp_path / "profiles.yml").write_text((ROOT / "profiles.yml").read_text(encoding="utf-8"), encoding="utf-8")
    profile, why = resolve_profile(None, tmp_path)
    assert profile.name == "sample" and "no official data" in why
    assert "profile 'sample'" in capsys.readouterr().err
    assert resolve_profile("competition", tmp_path)[0].name == "competition"
