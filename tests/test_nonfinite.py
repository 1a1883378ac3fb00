"""Non-finite numbers never reach an output: a checkpoint with a NaN weight makes submit fail in one
line naming the item and the checkpoint and write nothing; no JSON writer writes NaN; a NaN read
back (an old score cache, a probabilities file) is refused."""
from __future__ import annotations

import json
import math
import shutil

import pytest

from inference import submit
from maerak import files, modes


def nan_copy(src, dest, tensor: str = "model.layers.0.mlp.down_proj.weight"):
    """A copy of a checkpoint with one weight tensor set to NaN (the issue's NANCOPY)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dest)
    weights = load_file(dest / "model.safetensors")
    weights[tensor] = weights[tensor].clone().fill_(math.nan)
    save_file(weights, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def run_submit(model, inp, out, *extra):
    args = submit.build_parser().parse_args(
        ["--profile", "sample", "--model", str(model), "--input", str(inp), "--output", str(out), *extra])
    return submit.run(args)


@pytest.mark.parametrize("cache", [False, True])
def test_a_nan_weight_makes_submit_fail_in_one_line_and_write_nothing(tiny_model_dir, sample_dir, tmp_path, capsys, cache):
    model = nan_copy(tiny_model_dir, tmp_path / "NANCOPY")
    modes.write_record(model, "letters")  # as training leaves it (no fallback warning)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    rc = run_submit(model, sample_dir / "test.json", out_dir / "submission.json", "--quiet",
                    *([] if cache else ["--no-cache"]))
    err = capsys.readouterr().err
    ids = [t["id"] for t in json.loads((sample_dir / "test.json").read_text(encoding="utf-8"))]
    assert rc == 1
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("Loading weights")]  # transformers' bar
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {model}: item ") and "nan" in lines[0] and "nothing written" in lines[0]
    assert any(f"item {i}: the log-likelihood of continuation" in lines[0] for i in ids)
    assert list(out_dir.iterdir()) == []  # no submission, no probabilities, no cache


def test_a_nan_in_an_old_score_cache_is_refused(tiny_model_dir, sample_dir, tmp_path, capsys):
    out = tmp_path / "submission.json"
    assert run_submit(tiny_model_dir, sample_dir / "test.json", out, "--quiet") == 0
    cache = tmp_path / "submission.cache.jsonl"
    rows = [json.loads(line) for line in cache.read_text(encoding="utf-8").splitlines()]
    rows[3]["loglikelihoods"][1] = math.nan  # as a writer that allowed NaN left it
    cache.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out.unlink()
    assert run_submit(tiny_model_dir, sample_dir / "test.json", out, "--quiet") == 1
    assert f"item {rows[3]['id']}: the log-likelihood of continuation 2" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_no_json_writer_writes_a_non_finite_number(tmp_path, bad):
    for write in (files.atomic_write_json, files.atomic_write_jsonl, files.append_jsonl):
        path = tmp_path / "x.json"
        with pytest.raises(ValueError, match="JSON compliant"):
            write(path, [{"probs": [0.5, bad]}])
        assert not path.exists()
    with pytest.raises(ValueError):
        files.dumps_json({"accuracy": bad})


def test_evaluate_refuses_a_probabilities_file_holding_nan(sample_dir, tmp_path, capsys):
    from inference import evaluate

    dev = json.loads((sample_dir / "dev.json").read_text(encoding="utf-8"))
    pred = tmp_path / "dev_predictions.json"
    pred.write_text(json.dumps(dev), encoding="utf-8")
    items = [{"id": d["id"], "probs": [1 / 3, 1 / 3, 1 / 3], "prediction": d["output"]} for d in dev]
    items[2]["probs"] = [math.nan] * 3
    (tmp_path / "dev_predictions.probs.json").write_text(json.dumps({"items": items}), encoding="utf-8")
    rc = evaluate.main(["--profile", "sample", "--pred", str(pred), "--gold", str(sample_dir / "dev.json"),
                        "--out", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert rc == 1 and "dev_predictions.probs.json" in err and "non-finite" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "eval").exists()
