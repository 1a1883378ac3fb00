"""maerak/budget.py: Axolotl's step arithmetic, the estimate's checks, the rate cache's key."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest

from maerak import budget
from training import step_rate


@pytest.mark.parametrize("rows, micro, accum, epochs", [(151, 4, 1, 1), (756, 4, 1, 2), (10, 2, 3, 1), (7, 4, 2, 1.5), (1, 8, 1, 1)])
def test_steps_are_axolotls_own(rows, micro, accum, epochs):
    """Without max_steps: Axolotl's calculate_total_num_steps on the same config and an unpacked dataset."""
    from axolotl.utils.dict import DictDefault
    from axolotl.utils.trainer import calculate_total_num_steps
    from datasets import Dataset

    cfg = {"micro_batch_size": micro, "gradient_accumulation_steps": accum, "num_epochs": epochs, "sample_packing": False}
    data = Dataset.from_dict({"input_ids": [[1, 2, 3]] * rows, "labels": [[-100, 2, 3]] * rows})
    axolotl_cfg = DictDefault({**cfg, "batch_size": micro * accum})  # normalize_config's batch_size, one process
    assert budget.stage_steps(cfg, rows) == calculate_total_num_steps(axolotl_cfg, data, update=False)
    # max_steps: what Axolotl hands the HF Trainer (core/builders/base.py: cfg.max_steps or total_num_steps)
    assert budget.stage_steps({**cfg, "max_steps": 3}, rows) == 3
    assert budget.stage_steps({**cfg, "max_steps": 10_000}, rows) == 10_000  # the Trainer goes round the data again


def test_orpo_pairs_count_two_sequences_and_packing_is_refused():
    plan = budget.stage_plan(3, {"rl": "orpo", "micro_batch_size": 2, "max_steps": 60}, rows=500)
    assert (plan.steps, plan.rows_per_step, plan.sequences) == (60, 2, 240)
    assert plan.text() == "stage 3 60 steps × 2 pairs"
    with pytest.raises(ValueError, match="unpacked"):
        budget.stage_steps({"sample_packing": True, "micro_batch_size": 1}, 10)


def plans():
    return (budget.stage_plan(1, {"micro_batch_size": 4, "max_steps": 10}, 600),
            budget.stage_plan(2, {"micro_batch_size": 4, "num_epochs": 1}, 757))


def test_the_estimate_is_rows_times_rate_plus_items_times_rate():
    rates = budget.Rates(0.5, 0.25, "float32", "float32", "measured")
    est = budget.estimate(plans(), (3,), 756, rates)
    assert est.seconds == pytest.approx((40 + 190 * 4) * 0.5 + 756 * 0.25)
    assert est.line().startswith("budget: stage 1 10 steps × 4 rows, stage 2 190 steps × 4 rows, stage 3 off; "
                                 "scoring 756 items; estimated 10 min on this CPU (float32, measured 0.50 s/row")
    assert json.loads(json.dumps(est.record()))["seconds"] == est.seconds


@pytest.mark.parametrize("train, score", [(math.nan, 0.1), (0.1, math.inf), (0.0, 0.1), (0.1, -1.0), (None, 0.1)])
def test_rates_that_are_not_finite_positive_give_no_estimate(train, score):
    est = budget.estimate(plans(), (3,), 756, budget.Rates(train, score, "float32", "float32", "measured"))
    assert est.seconds is None
    assert "no estimate (measured rates are not finite positive numbers" in est.line()
    assert "\n" not in est.line()


def fake_profile(tmp_path, model_dir):
    rows = tmp_path / "stage2.jsonl"
    rows.write_text(json.dumps({"instruction": "i", "input": "x", "output": "y"}) + "\n", encoding="utf-8")
    cfg = {"micro_batch_size": 4, "sequence_len": 64, "plugins": ["training.answer_loss.AnswerLossPlugin"]}
    return SimpleNamespace(stage_data=lambda n: rows, base_model=str(model_dir), stage_config=lambda n: cfg,
                           out=tmp_path / "out")


def test_rates_are_cached_per_cpu_key_and_bad_ones_never(tmp_path, tiny_model_dir, monkeypatch):
    from maerak import cpu_dtype

    profile = fake_profile(tmp_path, tiny_model_dir)
    calls = []

    def measure(*args):
        calls.append(args)
        return next(answers)

    answers = iter([(2.0, 1.0), (3.0, 1.5), (math.nan, 1.0), (math.nan, 1.0)])
    monkeypatch.setattr(cpu_dtype, "cpu_key", lambda: "cpu-a")
    first = budget.rates(profile, "float32", "float32", measure)
    again = budget.rates(profile, "float32", "float32", measure)
    assert (first.source, again.source, again.train_s_per_row, len(calls)) == ("measured", "cached", 2.0, 1)
    monkeypatch.setattr(cpu_dtype, "cpu_key", lambda: "cpu-b")  # another CPU: measured again
    assert budget.rates(profile, "float32", "float32", measure).train_s_per_row == 3.0 and len(calls) == 2
    monkeypatch.setattr(cpu_dtype, "cpu_key", lambda: "cpu-c")
    bad = budget.rates(profile, "float32", "float32", measure)  # not cached: measured again next time
    assert budget.rates(profile, "float32", "float32", measure).source == "measured" and len(calls) == 4
    assert budget.estimate(plans(), (), 10, bad).seconds is None
    key = budget.rates_key("cpu-a", b"{}", "row", "float32", "float32", {})
    assert key != budget.rates_key("cpu-b", b"{}", "row", "float32", "float32", {})
    assert key != budget.rates_key("cpu-a", b"{}", "row", "bfloat16", "float32", {})


def test_measure_times_a_real_step_and_forward(tmp_path, tiny_model_dir):
    profile = fake_profile(tmp_path, tiny_model_dir)
    row = json.loads(profile.stage_data(2).read_text(encoding="utf-8"))
    train_s, score_s = step_rate.measure(tiny_model_dir, row, profile.stage_config(2), "float32", "float32")
    assert budget.usable(train_s) and budget.usable(score_s)


def test_a_previous_run_on_this_cpu_gives_its_rates():
    est = budget.estimate(plans(), (3,), 40, budget.Rates(1.0, 1.0, "float32", "float32", "measured"))
    record = {"estimate": est.record("cpu-a"),
              "steps": {"train-stage2": 380.0, "submit": 30.0, "predict-dev": 10.0}}
    found = budget.previous_rates(record, "cpu-a", "float32", "float32")
    assert (found.train_s_per_row, found.score_s_per_item, found.source) == (0.5, 1.0, "previous run's")
    assert budget.previous_rates(record, "cpu-b", "float32", "float32") is None  # another CPU
    assert budget.previous_rates(record, "cpu-a", "bfloat16", "float32") is None  # another dtype
    reused = {**record, "steps": {**record["steps"], "train-stage2": 0.0}}  # skipped: no timing
    assert budget.previous_rates(reused, "cpu-a", "float32", "float32") is None
    assert budget.previous_rates({"steps": {}}, "cpu-a", "float32", "float32") is None
