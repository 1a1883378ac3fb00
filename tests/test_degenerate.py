"""Degenerate predictions are reported: one answer for most items, or probabilities that do not
depend on the input, by evaluate (stderr, metrics.json, report.md) and submit (stderr, probs.json)."""
from __future__ import annotations

import json

from inference import evaluate, submit
from inference.degenerate import degeneracy
from maerak.schema import LABELS

BALANCED = {"inference_1": 7, "inference_2": 7, "inference_3": 6}


def varied(n: int) -> tuple[list[str], list[list[float]]]:
    """A healthy-looking set: answers spread over the options, probabilities moving per item."""
    probs = [[0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.1, 0.4]]
    rows = [probs[i % 4] for i in range(n)]
    return [LABELS[r.index(max(r))] for r in rows], rows


def test_one_answer_for_most_items_is_flagged_unless_the_gold_is_like_that():
    preds = ["inference_1"] * 20
    probs = [[0.5 + i / 100, 0.3 - i / 100, 0.2] for i in range(20)]  # input-dependent, same argmax
    d = degeneracy(preds, probs, BALANCED)
    assert d["one_answer"] and not d["input_independent"]
    assert d["warnings"] == ["WARNING: degenerate predictions: inference_1 for 20 of 20 items (100%; gold has it "
                             "for 35%); the model is not reading the items"]
    assert degeneracy(preds[:16] + ["inference_2"] * 4, probs)["one_answer"] is False  # 80%: not more than
    assert degeneracy(preds, probs, {"inference_1": 18, "inference_2": 1, "inference_3": 1})["warnings"] == []
    assert degeneracy(preds[:9], probs[:9])["warnings"] == []  # too few items to say


def test_probabilities_that_do_not_depend_on_the_input_are_flagged():
    # Near-identical vectors whose argmax still moves: no single answer dominates, yet nothing is read.
    probs = [[1 / 3 + d, 1 / 3 - d, 1 / 3] if i % 2 else [1 / 3 - d, 1 / 3 + d, 1 / 3]
             for i, d in enumerate([0.002] * 20)]
    preds = [LABELS[p.index(max(p))] for p in probs]
    d = degeneracy(preds, probs, BALANCED)
    assert not d["one_answer"] and d["input_independent"] and d["input_spread"] < 0.01
    assert len(d["warnings"]) == 1 and "hardly depend on the input" in d["warnings"][0]


def test_a_healthy_prediction_set_gives_no_warning():
    preds, probs = varied(20)
    d = degeneracy(preds, probs, BALANCED)
    assert d["warnings"] == [] and not d["one_answer"] and not d["input_independent"]


def test_evaluate_reports_degenerate_predictions(sample_dir, tmp_path, capsys):
    dev = json.loads((sample_dir / "dev.json").read_text(encoding="utf-8"))
    pred = tmp_path / "dev_predictions.json"
    pred.write_text(json.dumps([{**d, "output": "inference_1"} for d in dev], ensure_ascii=False), encoding="utf-8")
    items = [{"id": d["id"], "probs": [0.4, 0.35, 0.25], "prediction": "inference_1"} for d in dev]
    (tmp_path / "dev_predictions.probs.json").write_text(json.dumps({"items": items}, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "eval"
    assert evaluate.main(["--profile", "sample", "--pred", str(pred), "--gold", str(sample_dir / "dev.json"),
                          "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("WARNING: degenerate predictions") == 2  # one answer, and input-independent
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["degenerate"]
    assert m["one_answer"] and m["input_independent"] and m["top_share"] == 1.0 and m["gold_share"] == 0.35
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "**WARNING: degenerate predictions: inference_1 for 20 of 20 items" in report
    assert "one answer everywhere: YES" in report and "independent of the input: YES" in report

    pred.write_text(json.dumps(dev, ensure_ascii=False), encoding="utf-8")  # the gold itself: not degenerate
    (tmp_path / "dev_predictions.probs.json").unlink()
    assert evaluate.main(["--profile", "sample", "--pred", str(pred), "--gold", str(sample_dir / "dev.json"),
                          "--out", str(out)]) == 0
    assert "WARNING" not in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8"))["degenerate"]["warnings"] == []
    assert "one answer everywhere: no" in (out / "report.md").read_text(encoding="utf-8")


def test_submit_reports_degenerate_predictions(tiny_model_dir, sample_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(submit, "score_items", lambda scorer, items, *a, **k: {it.id: [0.5, 0.3, 0.2] for it in items})
    out = tmp_path / "submission.json"
    args = submit.build_parser().parse_args(["--profile", "sample", "--model", str(tiny_model_dir), "--input",
                                             str(sample_dir / "test.json"), "--output", str(out), "--quiet"])
    assert submit.run(args) == 0
    assert capsys.readouterr().err.count("WARNING: degenerate predictions") == 2
    d = json.loads((tmp_path / "submission.probs.json").read_text(encoding="utf-8"))["degenerate"]
    assert d["one_answer"] and d["input_independent"] and d["gold_share"] is None
