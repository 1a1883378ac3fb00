"""Training curves (inference/curves.py) from a synthetic trainer_state.json, and their place in report.md."""
from __future__ import annotations

import json
import math

import pytest

from inference import curves
from maerak.schema import DataError
from training import resume


def _state(tmp_path, name, rows):
    d = tmp_path / name
    d.mkdir()
    (d / "trainer_state.json").write_text(json.dumps({"global_step": len(rows), "log_history": rows}), encoding="utf-8")
    return d


SFT = [{"step": s, "epoch": s / 3, "loss": 2.0 / s, "learning_rate": 1e-4 * (3 - s), "grad_norm": 1.5 - 0.1 * s}
       for s in (1, 2, 3)] + [{"step": 3, "train_runtime": 9.0, "train_loss": 1.2}]
ORPO = [{"step": s, "loss": 1.0 / s, "learning_rate": 1e-5, "grad_norm": 0.5, "rewards/chosen": -0.1 * s,
         "rewards/rejected": -0.2 * s, "rewards/margins": 0.1 * s} for s in (1, 2)]


def test_series_takes_each_logged_key_by_step_and_drops_non_finite():
    rows = [*SFT, {"step": 4, "loss": math.nan, "grad_norm": math.inf, "learning_rate": 0.0}]
    data = curves.series(rows)
    assert data["loss"] == ([1, 2, 3], [2.0, 1.0, 2.0 / 3])
    assert data["learning_rate"][0] == [1, 2, 3, 4] and data["grad_norm"][0] == [1, 2, 3]
    assert "train_loss" not in data and "rewards/chosen" not in data
    assert curves.nonfinite(rows) == [(4, "loss"), (4, "grad_norm")]
    assert set(curves.series(ORPO)) == {"loss", "learning_rate", "grad_norm", "rewards/chosen",
                                        "rewards/rejected", "rewards/margins"}


def test_one_png_per_stage_and_a_note_for_a_stage_without_a_log(tmp_path):
    stages = {"stage1": _state(tmp_path, "s1", SFT), "stage2": tmp_path / "never-ran", "stage3": _state(tmp_path, "s3", ORPO)}
    out = tmp_path / "eval"
    out.mkdir()
    written, notes = curves.write_curves(stages, out)
    assert written == ["curves_stage1.png", "curves_stage3.png"]
    assert len(notes) == 1 and notes[0].startswith("stage2: no `")
    for name in written:
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_malformed_trainer_state_names_the_file(tmp_path):
    d = tmp_path / "s1"
    d.mkdir()
    (d / "trainer_state.json").write_text('{"log_history": 3}', encoding="utf-8")
    with pytest.raises(DataError, match="trainer_state.json.*log_history"):
        curves.write_curves({"stage1": d}, tmp_path)


def test_the_last_complete_checkpoints_log_history_outlives_the_checkpoints(tmp_path):
    out = _state(tmp_path, "stage2", SFT)
    (out / "trainer_state.json").unlink()
    for n, rows in ((1, SFT[:1]), (2, SFT[:2])):
        (out / f"checkpoint-{n}").mkdir()
        (out / f"checkpoint-{n}" / "trainer_state.json").write_text(json.dumps({"log_history": rows}), encoding="utf-8")
    (out / "checkpoint-3").mkdir()  # half-written: no trainer_state.json
    resume.keep_log_history(out)
    resume.finish(out)
    assert not list(out.glob("checkpoint-*"))
    assert curves.read_log_history(out / "trainer_state.json") == SFT[:2]


def test_a_fresh_start_or_a_run_without_checkpoints_leaves_no_earlier_runs_log(tmp_path):
    out = _state(tmp_path, "stage2", SFT)
    (out / "runs" / "old").mkdir(parents=True)
    assert resume.resume_point(out, "new-key") is None
    assert not (out / "trainer_state.json").exists() and not (out / "runs").exists()
    (out / "trainer_state.json").write_text("{}", encoding="utf-8")
    resume.keep_log_history(out)  # save_strategy: no, so no checkpoint to take it from
    assert not (out / "trainer_state.json").exists()
