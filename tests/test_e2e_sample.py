"""`make test-e2e`: the real pipeline on the embedded model (minutes, so not in `make test`).

Runs `./run.sh reproduce --profile sample` as a user would (it writes outputs/sample/),
then checks the submission, the evaluation and `verify`, including that verify fails
when one byte of the submission changes.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "outputs" / "sample"

pytestmark = pytest.mark.e2e


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["./run.sh", *args], cwd=ROOT, capture_output=True, text=True)


@pytest.fixture(scope="module")
def reproduced():
    res = run("reproduce", "--profile", "sample")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res


def test_reproduce_writes_a_valid_submission_and_report(reproduced):
    assert "profile 'sample'" in reproduced.stdout.splitlines()[0]
    check = run("check-submission", "--submission", str(OUT / "submission.json"), "--test", "data/sample/test.json")
    assert check.returncode == 0, check.stderr
    metrics = json.loads((OUT / "eval" / "metrics.json").read_text(encoding="utf-8"))
    assert json.dumps(metrics)  # the report exists and parses
    assert (OUT / "manifest.json").is_file()
    # What a person sees of the training (issue 31): a curve per stage in the report, TensorBoard
    # event files under outputs/sample, and the run's numbers in a results file `make results` renders.
    report = (OUT / "eval" / "report.md").read_text(encoding="utf-8")
    for stage in ("stage1", "stage2", "stage3"):
        assert (OUT / "eval" / f"curves_{stage}.png").is_file() and f"![curves_{stage}.png]" in report
        assert list((OUT / stage / "runs").rglob("events.out.tfevents.*")), stage
    results = json.loads((OUT / "results.json").read_text(encoding="utf-8"))
    assert results["dev"]["accuracy"] == metrics["accuracy"] and results["machine"]["torch_cpu_capability"]


def test_verify_passes_then_fails_on_a_changed_byte(reproduced):
    res = run("verify", "--profile", "sample")
    assert res.returncode == 0, res.stdout[-3000:]
    sub = OUT / "submission.json"
    original = sub.read_bytes()
    try:
        sub.write_bytes(original + b" ")  # one byte more
        bad = run("verify", "--profile", "sample", "--no-rerun")
        assert bad.returncode != 0 and "MISMATCH" in bad.stdout
    finally:
        sub.write_bytes(original)
