"""Evaluation: metric numbers on a hand-made prediction set, the report files, and the tiny model."""
from __future__ import annotations

import copy
import json

import pytest

from inference import evaluate
from inference.evaluate import agreement, compute_metrics
from maerak.files import dumps_json
from maerak.schema import load_items

# (id, category, gold, prediction or None, probabilities or None)
HAND = [
    ("a", "원인", "inference_1", "inference_1", [0.7, 0.2, 0.1]),
    ("b", "원인", "inference_2", "inference_1", [0.5, 0.4, 0.1]),
    ("c", "동기", "inference_3", "inference_3", [0.1, 0.1, 0.8]),
    ("d", "반응", "inference_1", "inference_2", [0.3, 0.6, 0.1]),
    ("e", "반응", "inference_2", None, None),
]


@pytest.fixture
def hand_files(sample_dir, tmp_path):
    template = json.loads((sample_dir / "dev.json").read_text(encoding="utf-8"))[0]
    gold, pred, probs = [], [], []
    for iid, cat, label, p, pr in HAND:
        item = copy.deepcopy(template)
        item["id"], item["input"]["category"], item["output"] = iid, cat, label
        gold.append(item)
        if p is not None:
            pred.append({**item, "output": p})
            probs.append({"id": iid, "probs": pr, "prediction": p})
    (tmp_path / "gold.json").write_text(dumps_json(gold), encoding="utf-8")
    (tmp_path / "pred.json").write_text(dumps_json(pred), encoding="utf-8")
    (tmp_path / "pred.probs.json").write_text(dumps_json({"mode": "options", "tta": "none", "items": probs}),
                                              encoding="utf-8")
    return tmp_path


def test_metrics_on_a_hand_made_set(hand_files):
    gold, _ = load_items(hand_files / "gold.json", require_labels=True)
    pred = evaluate.read_predictions(hand_files / "pred.json")
    m = compute_metrics(pred, gold, evaluate.read_probs(hand_files / "pred.json"))
    assert (m["n"], m["correct"], m["accuracy"]) == (5, 2, 0.4)
    assert m["per_category"] == {
        "원인": {"n": 2, "correct": 1, "accuracy": 0.5},
        "동기": {"n": 1, "correct": 1, "accuracy": 1.0},
        "반응": {"n": 2, "correct": 0, "accuracy": 0.0},
    }
    assert m["confusion"]["matrix"] == [[1, 1, 0], [1, 0, 0], [0, 0, 1]]
    assert m["position_bias"]["predicted"] == {"inference_1": 2, "inference_2": 1, "inference_3": 1}
    assert m["position_bias"]["gold"] == {"inference_1": 2, "inference_2": 2, "inference_3": 1}
    assert m["wrong_ids"] == ["b", "d", "e"]
    assert m["missing_predictions"] == ["e"]
    mg = m["margin"]
    assert mg["n"] == 4
    assert mg["mean_margin"] == pytest.approx(0.4)
    assert mg["mean_margin_correct"] == pytest.approx(0.6)
    assert mg["mean_margin_wrong"] == pytest.approx(0.2)
    assert mg["mean_gold_probability"] == pytest.approx(0.55)


def test_agreement_table(hand_files):
    gold, _ = load_items(hand_files / "gold.json", require_labels=True)
    a = {"a": "inference_1", "b": "inference_1", "c": "inference_3", "d": "inference_2"}
    b = {"a": "inference_1", "b": "inference_2", "c": "inference_1", "d": "inference_3", "e": "inference_1"}
    t = agreement(a, b, gold)
    assert (t["n"], t["agree"]) == (5, 1)
    assert (t["both_correct"], t["only_a_correct"], t["only_b_correct"]) == (1, 1, 1)
    assert (t["both_wrong_same"], t["both_wrong_different"]) == (0, 2)
    assert t["choices"]["matrix"] == [[1, 1, 0], [0, 0, 1], [1, 0, 0]]


def test_report_files(hand_files, capsys):
    out = hand_files / "eval"
    pred2 = hand_files / "pred2.json"
    rows = json.loads((hand_files / "pred.json").read_text(encoding="utf-8"))
    rows[0]["output"] = "inference_3"
    pred2.write_text(dumps_json(rows), encoding="utf-8")
    rc = evaluate.main(["--profile", "sample", "--pred", str(hand_files / "pred.json"),
                        "--gold", str(hand_files / "gold.json"), "--pred2", str(pred2), "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "accuracy 40.00% (2/5)" in printed
    assert "원인: 50.00% (1/2)" in printed and "반응: 0.00% (0/2)" in printed
    for name in ("report.md", "metrics.json", "wrong_ids.txt", "per_category.png", "confusion.png",
                 "position_bias.png", "margin.png"):
        assert (out / name).exists(), name
    for png in out.glob("*.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["accuracy"] == 0.4 and metrics["agreement"]["agree"] == 3
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "**Accuracy: 40.00%** (2/5)" in report
    assert "| 원인 | 2 | 1 | 50.00% |" in report
    assert "- e (no valid prediction)" in report
    assert "agree on 3/5" in report
    assert "- scored: mode options, tta none" in report and metrics["scoring"] == {"mode": "options", "tta": "none"}
    assert (out / "wrong_ids.txt").read_text() == "b\nd\ne\n"


def test_no_margin_plot_without_probabilities(hand_files):
    (hand_files / "pred.probs.json").unlink()
    out = hand_files / "eval"
    assert evaluate.main(["--pred", str(hand_files / "pred.json"), "--gold", str(hand_files / "gold.json"),
                          "--out", str(out)]) == 0
    assert not (out / "margin.png").exists()
    assert "margin" not in json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def test_unlabeled_gold_is_an_error(sample_dir, tmp_path, capsys):
    rc = evaluate.main(["--pred", str(sample_dir / "test.json"), "--gold", str(sample_dir / "test.json"),
                        "--out", str(tmp_path)])
    assert rc == 1
    assert "label required" in capsys.readouterr().err


def test_report_on_the_tiny_model(tiny_model_dir, sample_dir, tmp_path):
    from inference import submit

    pred = tmp_path / "dev_predictions.json"
    args = submit.build_parser().parse_args(["--profile", "sample", "--model", str(tiny_model_dir), "--input",
                                             str(sample_dir / "dev.json"), "--output", str(pred), "--quiet"])
    assert submit.run(args) == 0
    out = tmp_path / "eval"
    assert evaluate.main(["--profile", "sample", "--pred", str(pred), "--out", str(out)]) == 0
    dev = json.loads((sample_dir / "dev.json").read_text(encoding="utf-8"))
    got = {r["id"]: r["output"] for r in json.loads(pred.read_text(encoding="utf-8"))}
    right = sum(got[d["id"]] == d["output"] for d in dev)
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["correct"] == right and metrics["n"] == len(dev)
    assert sum(v["n"] for v in metrics["per_category"].values()) == len(dev)
    assert (out / "margin.png").exists() and metrics["margin"]["n"] == len(dev)


def test_report_embeds_the_training_curves_beside_the_confusion_matrix(hand_files, tmp_path):
    from tests.test_curves import ORPO, SFT, _state

    gold, _ = load_items(hand_files / "gold.json", require_labels=True)
    metrics = evaluate.compute_metrics(evaluate.read_predictions(hand_files / "pred.json"), gold)
    stages = {"stage1": _state(tmp_path, "s1", SFT), "stage3": _state(tmp_path, "s3", ORPO)}
    out = tmp_path / "eval"
    files = evaluate.write_report(metrics, out, "p", "g", stages=stages)
    assert "curves_stage1.png" in files and "curves_stage3.png" in files
    report = (out / "report.md").read_text(encoding="utf-8")
    assert "![confusion.png](confusion.png)" in report
    assert "## Training curves" in report
    assert "![curves_stage1.png](curves_stage1.png)" in report and "![curves_stage3.png](curves_stage3.png)" in report
