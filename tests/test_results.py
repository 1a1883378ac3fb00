"""Results files -> docs (bench/render.py, bench/record.py, maerak/machine.py) on synthetic results."""
from __future__ import annotations

import json
import sys

import pytest

from bench import record, render
from maerak.machine import machine

MACHINE = {"cpu": "Test CPU 9000", "cpu_flags": ["avx2", "fma"], "cores": 2, "memory_gib": 24.0, "torch": "2.13.0",
           "torch_cpu_capability": "AVX2", "cuda": None, "gpus": [], "python": "3.11.9",
           "git": {"commit": "0123456789abcdef", "dirty": False, "source": "git"}}
RUN = {"kind": "reproduce", "name": "sample", "command": "make reproduce PROFILE=sample", "data": "data/sample",
       "scoring_mode": "letters", "dev": {"n": 20, "correct": 7, "accuracy": 0.35}, "seconds": 563.2,
       "steps": {"model": 90.8, "prepare": 9.1, "train-stage1": 70.5}, "steps_reused": [],
       "finished_utc": "2026-12-04T19:00:00Z", "machine": MACHINE}
README = "# x\n\n## Results\n\n" + render.BEGIN + "\nold table 99%\n" + render.END + "\n\nafter\n"


@pytest.fixture
def root(tmp_path):
    (tmp_path / "README.md").write_text(README, encoding="utf-8")
    (tmp_path / "results").mkdir()
    out = tmp_path / "outputs" / "sample"
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps(RUN), encoding="utf-8")
    bench = {"kind": "bench", "name": "dedup", "command": ".venv/bin/python bench/dedup.py",
             "output": "full set: 20000 items in 1.5s\n", "results": None, "seconds": 3.2,
             "finished_utc": "2026-12-04T19:05:00Z", "machine": {**MACHINE, "gpus": ["NVIDIA H200"]}}
    (tmp_path / "results" / "bench-dedup.json").write_text(json.dumps(bench), encoding="utf-8")
    return tmp_path


def test_render_puts_every_number_from_the_results_files_into_the_docs(root):
    assert render.main(["--root", str(root), "--check"]) == 1  # README holds a stale table
    assert render.main(["--root", str(root)]) == 0
    assert json.loads((root / "results" / "reproduce-sample.json").read_text(encoding="utf-8")) == RUN
    readme = (root / "README.md").read_text(encoding="utf-8")
    assert "old table" not in readme and readme.endswith(render.END + "\n\nafter\n")
    row = next(ln for ln in readme.splitlines() if ln.startswith("| `sample`"))
    for cell in ("`data/sample`", "35.0% (7/20)", "9.4 min", "Test CPU 9000 (AVX2), 2 cores, no GPU", "`0123456789`",
                 "results/reproduce-sample.json"):
        assert cell in row, cell
    bench = (root / "BENCHMARKS.md").read_text(encoding="utf-8")
    assert "| train-stage1 | 70.5 |" in bench and "| **total** | **563.2** |" in bench
    assert "full set: 20000 items in 1.5s" in bench and "NVIDIA H200" in bench and "avx2, fma" in bench
    assert render.main(["--root", str(root), "--check"]) == 0  # rendered: nothing stale


def test_a_run_that_reused_steps_says_so_next_to_its_wall_time(root):
    reused = {**RUN, "seconds": 7.1, "steps": {"model": 0.0, "prepare": 0.0, "train-stage1": 0.0},
              "steps_reused": ["model", "prepare", "train-stage1"]}
    assert "7 s (3 of 3 steps reused)" in render.results_table([reused])


def test_a_readme_without_the_markers_is_one_line_and_nothing_written(root, capsys):
    (root / "README.md").write_text("# no markers\n", encoding="utf-8")
    assert render.main(["--root", str(root)]) == 1
    assert "README.md: no `<!-- RESULTS:BEGIN" in capsys.readouterr().err
    assert not (root / "BENCHMARKS.md").exists()


def test_record_keeps_a_scripts_output_json_and_machine(tmp_path):
    script = tmp_path / "fake_bench.py"
    script.write_text("import json, sys\nprint('ratio 2.50x')\n"
                      "json.dump({'ratio': 2.5}, open(sys.argv[sys.argv.index('--json') + 1], 'w'))\n", encoding="utf-8")
    assert record.main(["fake", "--json", "--out", str(tmp_path / "res"), "--", str(script)]) == 0
    rec = json.loads((tmp_path / "res" / "bench-fake.json").read_text(encoding="utf-8"))
    assert rec["output"] == "ratio 2.50x\n" and rec["results"] == {"ratio": 2.5} and rec["kind"] == "bench"
    assert rec["machine"]["torch_cpu_capability"] and rec["machine"]["cores"] >= 1
    script.write_text("import sys\nsys.exit(3)\n", encoding="utf-8")
    assert record.main(["broken", "--out", str(tmp_path / "res"), "--", str(script)]) == 3
    assert not (tmp_path / "res" / "bench-broken.json").exists()


def test_machine_names_cpu_kernel_level_torch_and_commit():
    import torch

    m = machine(render.ROOT)
    assert m["torch"] == torch.__version__ and m["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert m["cpu"] and m["cores"] >= 1 and m["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "commit" in m["git"]  # None in an image built without GIT_COMMIT
