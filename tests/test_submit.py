"""`./run.sh submit` on the tiny model: output shape, refusals, determinism, resume."""
from __future__ import annotations

import json

import pytest

from inference import submit
from inference.check_submission import check_submission_file
from maerak.schema import LABELS


def run_submit(model, inp, out, *extra, on_batch=None):
    args = submit.build_parser().parse_args(
        ["--profile", "sample", "--model", str(model), "--input", str(inp), "--output", str(out), "--quiet", *extra]
    )
    return submit.run(args, on_batch=on_batch)


def test_submit_writes_a_checked_submission_and_probabilities(tiny_model_dir, sample_dir, tmp_path):
    out = tmp_path / "submission.json"
    assert run_submit(tiny_model_dir, sample_dir / "test.json", out) == 0
    test = json.loads((sample_dir / "test.json").read_text(encoding="utf-8"))
    sub = json.loads(out.read_text(encoding="utf-8"))
    assert [s["id"] for s in sub] == [t["id"] for t in test]
    assert all(s["output"] in LABELS for s in sub)
    assert all({**s, "output": ""} == {**t, "output": ""} for s, t in zip(sub, test))
    assert "\\u" not in out.read_text(encoding="utf-8")
    assert check_submission_file(out, sample_dir / "test.json") == []
    probs = json.loads((tmp_path / "submission.probs.json").read_text(encoding="utf-8"))
    assert [r["id"] for r in probs["items"]] == [t["id"] for t in test]
    for row, s in zip(probs["items"], sub):
        assert sum(row["probs"]) == pytest.approx(1.0)
        assert row["prediction"] == s["output"] == f"inference_{row['probs'].index(max(row['probs'])) + 1}"


def test_dev_predictions_overwrite_labels(tiny_model_dir, sample_dir, tmp_path):
    out = tmp_path / "dev_predictions.json"
    assert run_submit(tiny_model_dir, sample_dir / "dev.json", out, "--tta", "cyclic") == 0
    dev = json.loads((sample_dir / "dev.json").read_text(encoding="utf-8"))
    pred = json.loads(out.read_text(encoding="utf-8"))
    probs = {r["id"]: r["prediction"] for r in json.loads((tmp_path / "dev_predictions.probs.json").read_text())["items"]}
    assert [p["output"] for p in pred] == [probs[d["id"]] for d in dev]
    assert [p["output"] for p in pred] != [d["output"] for d in dev]  # an untrained model is not the gold file
    assert all({**p, "output": 0} == {**d, "output": 0} for p, d in zip(pred, dev))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])  # official-cpu scores in bfloat16 (issue 17)
def test_two_runs_give_identical_bytes(tiny_model_dir, sample_dir, tmp_path, dtype):
    a, b = tmp_path / "a" / "s.json", tmp_path / "b" / "s.json"
    for out in (a, b):
        assert run_submit(tiny_model_dir, sample_dir / "test.json", out, "--no-cache", "--tta", "cyclic", "--dtype", dtype) == 0
    assert a.read_bytes() == b.read_bytes()
    assert (a.parent / "s.probs.json").read_bytes() == (b.parent / "s.probs.json").read_bytes()
    assert not (a.parent / "s.cache.jsonl").exists()


@pytest.mark.parametrize("breakage", ["drop_last", "rename_id", "duplicate", "swap_order"])
def test_refuses_to_write_when_ids_or_count_differ(tiny_model_dir, sample_dir, tmp_path, monkeypatch, capsys, breakage):
    real = submit.with_outputs

    def broken(items, outputs):
        rows = real(items, outputs)
        if breakage == "drop_last":
            return rows[:-1]
        if breakage == "rename_id":
            rows[3] = {**rows[3], "id": rows[3]["id"] + "-x"}
        if breakage == "duplicate":
            rows[1] = rows[0]
        if breakage == "swap_order":
            rows[0], rows[1] = rows[1], rows[0]
        return rows

    monkeypatch.setattr(submit, "with_outputs", broken)
    out = tmp_path / "submission.json"
    assert run_submit(tiny_model_dir, sample_dir / "test.json", out) == 1
    assert not out.exists()
    assert "refusing to write" in capsys.readouterr().err


def test_missing_checkpoint_and_bad_input_fail_cleanly(tiny_model_dir, fixtures_dir, sample_dir, tmp_path, capsys):
    assert run_submit(tmp_path / "nope", sample_dir / "test.json", tmp_path / "s.json") == 1
    assert "no checkpoint" in capsys.readouterr().err
    assert run_submit(tiny_model_dir, fixtures_dir / "bad_label.json", tmp_path / "s.json") == 1
    assert "output" in capsys.readouterr().err
    assert not (tmp_path / "s.json").exists()


def test_interrupted_submit_resumes_to_the_same_bytes(tiny_model_dir, sample_dir, tmp_path):
    fresh = tmp_path / "fresh" / "s.json"
    assert run_submit(tiny_model_dir, sample_dir / "test.json", fresh, "--no-cache") == 0

    out = tmp_path / "resumed" / "s.json"

    class Killed(Exception):
        pass

    written = []

    def die(unit, done):  # a unit is a conversation with all its items
        written.append(done)
        if unit == 2:
            raise Killed

    with pytest.raises(Killed):
        run_submit(tiny_model_dir, sample_dir / "test.json", out, on_batch=die)
    assert not out.exists()  # no partial submission
    cache = out.parent / "s.cache.jsonl"
    assert len(cache.read_text(encoding="utf-8").splitlines()) == written[-1] < 20  # 3 conversations' items

    seen = []
    assert run_submit(tiny_model_dir, sample_dir / "test.json", out, on_batch=lambda b, d: seen.append(b)) == 0
    assert out.read_bytes() == fresh.read_bytes()
    assert len(cache.read_text(encoding="utf-8").splitlines()) == 20  # only the missing items were added


def test_ensemble_of_two_checkpoints(tiny_model_dir, sample_dir, tmp_path):
    from conftest import save_tiny_checkpoint

    other = save_tiny_checkpoint(tmp_path / "other", seed=3)
    out = tmp_path / "s.json"
    args = ["--model", str(other), "--ensemble", "vote"]
    assert run_submit(tiny_model_dir, sample_dir / "test.json", out, *args) == 0
    probs = json.loads((tmp_path / "s.probs.json").read_text(encoding="utf-8"))
    assert len(probs["models"]) == 2 and probs["ensemble"] == "vote"
    for row in probs["items"]:
        a, b = row["per_model"]
        assert row["probs"] == pytest.approx([(x + y) / 2 for x, y in zip(a, b)])


def test_over_long_prompts_are_named_in_the_warning(tiny_model_dir, sample_dir, tmp_path, capsys):
    from transformers import AutoTokenizer

    from maerak.prompt import render_prompt
    from maerak.schema import load_items

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    items, _ = load_items(sample_dir / "test.json")
    lengths = {it.id: len(tok(render_prompt(it))["input_ids"]) for it in items}
    limit = sorted(lengths.values())[len(items) // 2]
    assert run_submit(tiny_model_dir, sample_dir / "test.json", tmp_path / "s.json", "--max-length", str(limit)) == 0
    err = capsys.readouterr().err
    cut = [i for i, n in lengths.items() if n > limit]
    assert cut and f"{len(cut)} item(s) had a prompt longer than {limit} tokens" in err
    assert "oldest conversation turns were left out" in err and all(i in err for i in cut)
    assert not any(i in err for i, n in lengths.items() if n <= limit)


# ---------------------------------------------------------------- the mode a checkpoint was trained for
@pytest.fixture
def options_checkpoint(tiny_model_dir, tmp_path):
    """The tiny checkpoint, recorded as trained for options mode (as stage 2 records it)."""
    import shutil

    from maerak import modes

    path = tmp_path / "options-ckpt"
    shutil.copytree(tiny_model_dir, path)
    modes.write_record(path, "options")
    return path


def test_submit_scores_in_the_mode_the_checkpoint_was_trained_for(options_checkpoint, sample_dir, tmp_path):
    out = tmp_path / "s.json"
    assert run_submit(options_checkpoint, sample_dir / "test.json", out) == 0  # the sample profile says letters
    assert json.loads((tmp_path / "s.probs.json").read_text(encoding="utf-8"))["mode"] == "options"
    assert run_submit(options_checkpoint, sample_dir / "test.json", out, "--mode", "options") == 0  # repeating it is fine


def test_a_contradicting_mode_is_a_one_line_error(options_checkpoint, sample_dir, tmp_path, capsys):
    from pipeline.cli import run_verb

    out = tmp_path / "s.json"
    argv = ["--profile", "sample", "--model", str(options_checkpoint), "--input", str(sample_dir / "test.json"),
            "--output", str(out), "--mode", "letters", "--quiet"]
    assert run_verb("submit", argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("submit: --mode letters: ")
    assert "trained for options mode" in err[0] and "maerak-mode.json" in err[0]
    assert not out.exists() and not (tmp_path / "s.probs.json").exists()


def test_a_checkpoint_without_a_record_falls_back_to_the_profile_with_a_warning(tiny_model_dir, sample_dir, tmp_path,
                                                                               capsys):
    out = tmp_path / "s.json"
    assert run_submit(tiny_model_dir, sample_dir / "test.json", out) == 0
    assert json.loads((tmp_path / "s.probs.json").read_text(encoding="utf-8"))["mode"] == "letters"
    err = capsys.readouterr().err
    assert f"warning: {tiny_model_dir}: no maerak-mode.json" in err and "the profile scoring.mode" in err


def test_an_ensemble_of_checkpoints_trained_for_different_modes_is_refused(options_checkpoint, tiny_model_dir, tmp_path):
    from maerak import modes
    from maerak.errors import MaerakError

    letters = tmp_path / "letters-ckpt"
    letters.mkdir()
    modes.write_record(letters, "letters")
    with pytest.raises(MaerakError, match="different scoring modes"):
        modes.checkpoint_mode([options_checkpoint, letters], None, "letters")
    # one recorded, one not: the record decides, with a warning for the other
    mode, warnings = modes.checkpoint_mode([options_checkpoint, tiny_model_dir], None, "letters")
    assert mode is modes.OPTIONS_MODE and len(warnings) == 1 and "from the other checkpoints" in warnings[0]
    (letters / modes.RECORD).write_text('{"mode": "logits"}', encoding="utf-8")
    with pytest.raises(MaerakError, match="unknown scoring mode 'logits'"):
        modes.read_record(letters)
