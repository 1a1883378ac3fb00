"""Interrupted runs: reproduce skips finished steps, redoes interrupted ones; stages resume from checkpoints.

Fast checks on stand-in steps (a module in tmp_path that copies a file and counts its
runs). The kill-and-resume run of the real pipeline is tests/test_kill_resume.py (e2e).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from maerak import stamps
from pipeline.cli import Verb
from pipeline.reproduce import Step, run_steps
from training import resume

FAKE = {"fakestep": Verb("fakestep", "a stand-in step")}

STEP_MODULE = '''
import json, pathlib, sys
def main(argv):
    src, dst, log = map(pathlib.Path, argv[:3])
    log.open("a").write(dst.name + "\\n")
    if len(argv) > 3 and argv[3] == "crash":
        dst.write_text("half")          # a half-written output, then the process dies
        raise SystemExit(9)
    dst.write_text(src.read_text() + "+")
    return 0
'''


@pytest.fixture
def dag(tmp_path, monkeypatch):
    (tmp_path / "fakestep.py").write_text(STEP_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("fakestep", None)
    (tmp_path / "in.txt").write_text("data")
    log = tmp_path / "log"
    names = ["a", "b", "c"]
    files = [tmp_path / "in.txt"] + [tmp_path / f"{n}.out" for n in names]

    def steps(crash: str = "") -> list[Step]:
        return [Step(n, "fakestep", (str(files[k]), str(files[k + 1]), str(log), *(["crash"] if n == crash else [])),
                     inputs=(files[k],), outputs=(files[k + 1],)) for k, n in enumerate(names)]

    def ran() -> list[str]:
        out = log.read_text().split() if log.exists() else []
        log.unlink(missing_ok=True)
        return [Path(x).stem for x in out]

    return tmp_path, steps, ran


def test_a_second_run_skips_every_finished_step(dag, capsys):
    root, steps, ran = dag
    state = root / ".stamps"
    run_steps(steps(), state, code="v1", verbs=FAKE)
    assert ran() == ["a", "b", "c"] and (root / "c.out").read_text() == "data+++"
    run_steps(steps(), state, code="v1", verbs=FAKE)
    assert ran() == []
    assert capsys.readouterr().out.count("skipped: done, and its inputs, code and outputs are unchanged") == 3


def test_a_changed_input_redoes_that_step_and_what_depends_on_it(dag):
    root, steps, ran = dag
    state = root / ".stamps"
    run_steps(steps(), state, code="v1", verbs=FAKE)
    ran()
    (root / "a.out").write_text("edited by hand")  # b's input, a's output
    run_steps(steps(), state, code="v1", verbs=FAKE)
    # a's output no longer matches its stamp: a is redone; it writes the same bytes, so b and c are not
    assert ran() == ["a"]
    (root / "in.txt").write_text("new data")
    run_steps(steps(), state, code="v1", verbs=FAKE)
    assert ran() == ["a", "b", "c"] and (root / "c.out").read_text() == "new data+++"
    run_steps(steps(), state, code="v2", verbs=FAKE)  # a code change redoes everything
    assert ran() == ["a", "b", "c"]


def test_a_deleted_output_is_made_again(dag):
    root, steps, ran = dag
    state = root / ".stamps"
    run_steps(steps(), state, code="v1", verbs=FAKE)
    ran()
    (root / "c.out").unlink()
    run_steps(steps(), state, code="v1", verbs=FAKE)
    assert ran() == ["c"]


def test_an_interrupted_step_is_redone_never_used_half_written(dag):
    root, steps, ran = dag
    state = root / ".stamps"
    run_steps(steps(), state, code="v1", verbs=FAKE)
    ran()
    (root / "in.txt").write_text("v2")
    with pytest.raises(SystemExit):
        run_steps(steps(crash="b"), state, code="v1", verbs=FAKE)
    assert ran() == ["a", "b"] and (root / "b.out").read_text() == "half"
    assert not stamps.stamp_path(state, "b").exists()
    run_steps(steps(), state, code="v1", verbs=FAKE)
    assert ran() == ["b", "c"] and (root / "c.out").read_text() == "v2+++"


def test_force_redoes_everything(dag):
    root, steps, ran = dag
    state = root / ".stamps"
    run_steps(steps(), state, code="v1", verbs=FAKE)
    ran()
    run_steps(steps(), state, code="v1", force=True, verbs=FAKE)
    assert ran() == ["a", "b", "c"]


def test_the_plan_names_the_inputs_and_outputs_of_each_step():
    from maerak.profiles import get_profile
    from pipeline.reproduce import nested_outputs, plan

    profile = get_profile("sample")
    steps = {s.name: s for s in plan(profile)}
    assert profile.prepared / "stage2.jsonl" in steps["train-stage2"].inputs
    assert profile.merged_dir in steps["train-stage2"].inputs and profile.final_dir in steps["submit"].inputs
    assert profile.stage2_dir in steps["train-stage3"].inputs and profile.final_dir == profile.stage3_dir
    assert nested_outputs(steps["train-stage1"], list(steps.values())) == (profile.merged_dir,)
    assert steps["merge"].fresh and not steps["model"].owned  # the embedded model is never removed


# ---------------------------------------------------------------- Axolotl checkpoints
def make_ckpt(out: Path, n: int, complete: bool = True) -> Path:
    ckpt = out / f"checkpoint-{n}"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(b"x")
    if complete:
        (ckpt / resume.COMPLETE).write_text(json.dumps({"global_step": n}))
    return ckpt


def test_resume_from_the_last_complete_checkpoint_of_the_same_run(tmp_path, capsys):
    out = tmp_path / "stage2"
    out.mkdir()
    assert resume.resume_point(out, "k1") is None  # a first run records its key
    make_ckpt(out, 2)
    make_ckpt(out, 4)
    make_ckpt(out, 6, complete=False)  # killed while saving
    assert resume.resume_point(out, "k1") == out / "checkpoint-4"
    assert not (out / "checkpoint-6").exists() and "half-written" in capsys.readouterr().out


def test_checkpoints_of_another_run_are_removed_not_resumed(tmp_path, capsys):
    out = tmp_path / "stage2"
    out.mkdir()
    resume.resume_point(out, "old config")
    make_ckpt(out, 4)
    assert resume.resume_point(out, "new config") is None
    assert resume.checkpoints(out) == [] and "from a run with other inputs" in capsys.readouterr().out
    make_ckpt(out, 2)
    resume.finish(out)
    assert resume.checkpoints(out) == [] and not (out / resume.MARKER).exists()


def test_the_run_key_follows_config_data_and_base_weights(tmp_path):
    cfg, data, base = tmp_path / "c.yml", tmp_path / "d.jsonl", tmp_path / "base"
    cfg.write_text("lr: 1")
    data.write_text("{}\n")
    base.mkdir()
    (base / "model.safetensors").write_bytes(b"w")
    key = resume.run_key(cfg, data, str(base))
    assert key == resume.run_key(cfg, data, str(base))
    for path, text in ((cfg, "lr: 2"), (data, "{}\n{}\n"), (base / "model.safetensors", "w2")):
        path.write_text(text)
        assert resume.run_key(cfg, data, str(base)) != key
        key = resume.run_key(cfg, data, str(base))


def test_competition_and_sample_stages_checkpoint_with_optimizer_states():
    import yaml

    root = Path(__file__).resolve().parent.parent
    for path in sorted((root / "axolotl_configs").glob("*/stage*.yml")):
        cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert cfg["save_strategy"] == "steps" and int(cfg["save_steps"]) > 0, path
        assert cfg["save_only_model"] is False, path  # an exact resume needs the optimizer and RNG states


def test_each_step_is_fingerprinted_by_the_code_it_runs(tmp_path):
    """A docstring edit in inference/evaluate.py redoes evaluate only; an edit in a module that
    training imports redoes training too; the plugin a stage YAML names counts for training."""
    import shutil

    from maerak.profiles import ROOT, Profile, get_profile
    from pipeline.reproduce import plan

    for name in ("maerak", "preprocessing", "training", "inference", "pipeline", "axolotl_configs"):
        shutil.copytree(ROOT / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("profiles.yml", "requirements.lock"):
        shutil.copy(ROOT / name, tmp_path / name)
    profile = Profile("sample", get_profile("sample").settings, root=tmp_path)

    def keys() -> dict[str, str]:
        return {s.name: stamps.fingerprint(s.code) for s in plan(profile)}

    def edit(rel: str) -> None:
        path = tmp_path / rel
        path.write_text('"""edited."""\n' + path.read_text(encoding="utf-8"), encoding="utf-8")

    steps = {s.name: s for s in plan(profile)}
    assert tmp_path / "training" / "answer_loss.py" in steps["train-stage2"].code  # named in the YAML only
    assert tmp_path / "inference" / "evaluate.py" not in steps["train-stage1"].code
    before = keys()
    edit("inference/evaluate.py")
    after = keys()
    assert {n for n in before if before[n] != after[n]} == {"evaluate"}
    edit("training/answer_loss.py")
    changed = {n for n, k in keys().items() if k != after[n]}
    assert changed == {"train-stage1", "merge", "train-stage2"}  # merge loads stage 1's YAML and its plugins
    before = keys()
    edit("maerak/errors.py")  # imported by every step
    assert all(k != before[n] for n, k in keys().items())


def test_what_bf16_auto_chose_is_part_of_a_stage_runs_resume_key(tmp_path):
    """A stage interrupted on a CPU where `bf16: auto` chose bf16 does not resume in float32 elsewhere."""
    from maerak.profiles import get_profile
    from training import axolotl_run as ar

    profile = get_profile("official-cpu")
    path, cfg = ar.stage_config(profile, 2)
    keys = {bf16: ar.stage_run_key(profile, 2, path, cfg, bf16) for bf16 in (None, True, False)}
    assert len(set(keys.values())) == 3
    assert keys[True] == ar.stage_run_key(profile, 2, path, cfg, True)
