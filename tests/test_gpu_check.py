"""make gpu-check's CPU side: it refuses without a GPU in one line, and its environment checks
(pip check, the arch list, bitsandbytes' library, the compiler) decide on made-up inputs as on a GPU."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

from pipeline import gpu_check
from tests.test_gpu_guards import H100


def test_without_a_gpu_one_line_and_exit_2():
    proc = subprocess.run([sys.executable, "-m", "pipeline.gpu_check"], cwd=gpu_check.ROOT, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gpu-check: no CUDA GPU"), proc.stderr


def test_env_rows_on_this_host_and_a_made_up_gpu():
    rows = {r.path: r for r in gpu_check.env_rows(H100)}
    assert rows["env: pip check"].status == "ok", rows["env: pip check"].detail  # the installed .venv is consistent
    assert rows["env: NVIDIA H100 80GB HBM3 sm_90 in torch's arch list"].status == "ok"
    assert rows["env: bitsandbytes' CUDA library"].status == "ok"
    blackwell = dataclasses.replace(H100, name="B200", capability=(10, 0))
    bad = {r.path: r for r in gpu_check.env_rows(blackwell)}
    assert bad["env: B200 sm_100 in torch's arch list"].status == "FAILED"
    assert "outside sm_60-sm_90" in bad["env: bitsandbytes' CUDA library"].detail
    no_lib = dataclasses.replace(H100, bnb_libs=("libbitsandbytes_cpu.so",))
    assert "no libbitsandbytes_cuda126.so" in {r.path: r for r in gpu_check.env_rows(no_lib)}["env: bitsandbytes' CUDA library"].detail
    print(gpu_check.table(list(rows.values())))


def test_pip_check_reports_a_broken_environment(tmp_path):
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'axolotl 0.19.0 has requirement triton>=3.4.0, but you have triton 3.2.0.'\nexit 1\n")
    fake.chmod(0o755)
    assert gpu_check.pip_check(str(fake)).startswith("pip check: 1 problem(s): axolotl 0.19.0 has requirement triton")


def test_compiler_and_python_h(tmp_path):
    assert "a C compiler" in gpu_check.compiler_problem(None, str(tmp_path))
    assert "Python.h" in gpu_check.compiler_problem("/usr/bin/cc", str(tmp_path))
    (tmp_path / "Python.h").write_text("")
    assert gpu_check.compiler_problem("/usr/bin/cc", str(tmp_path)) is None


def test_scores_compared_item_by_item(tmp_path):
    def probs(name, rows):
        p = tmp_path / name
        p.write_text(json.dumps({"items": [{"id": i, "probs": pr, "prediction": pd} for i, pr, pd in rows]}))
        return p

    a = probs("a.probs.json", [("x", [0.7, 0.2, 0.1], "1"), ("y", [0.1, 0.8, 0.1], "2")])
    b = probs("b.probs.json", [("x", [0.69, 0.21, 0.1], "1"), ("y", [0.1, 0.8, 0.1], "2")])
    assert gpu_check.compare_scores(a, b) == "2 items, same answers, max |Δp| 0.0100"
    c = probs("c.probs.json", [("x", [0.2, 0.7, 0.1], "2"), ("y", [0.1, 0.8, 0.1], "2")])
    import pytest

    with pytest.raises(RuntimeError, match="1 of 2 answers differ"):
        gpu_check.compare_scores(a, c)


def test_a_failed_step_stops_the_ones_after_it():
    def boom():
        raise RuntimeError("CUDA error: no kernel image is available")

    rows = gpu_check.run([("a", lambda: "fine"), ("b", boom), ("c", lambda: "never")], budget=60)
    assert [r.status for r in rows] == ["ok", "FAILED", "not run"]
    assert "no kernel image" in rows[1].detail and rows[2].detail == "after 'b' failed"


def test_the_steps_cover_every_gpu_only_path_and_override_only_the_budget():
    from pipeline import preflight

    ov = preflight.load_overrides(gpu_check.OVERRIDES)
    assert set(ov["stages"]) == {"max_steps", "save_steps"} and not any(k.startswith("stage") and k != "stages" for k in ov)
    names = [n for n, _ in gpu_check.gpu_steps("outputs/gpu-check-plan", n_gpus=2)]
    for path in ("stage 1: 4-bit QLoRA", "merge", "stage 2: bf16 + 8-bit AdamW, save", "stage 2: bf16 + 8-bit AdamW, resume",
                 "stage 3: ORPO", "scoring: transformers", "stage 2: 2 GPUs, DeepSpeed ZeRO-3, resume"):
        assert any(n.startswith(path) for n in names), (path, names)
    assert len([n for n, _ in gpu_check.gpu_steps("outputs/gpu-check-plan", n_gpus=1)]) < len(names)
