"""Results files -> docs (bench/render.py, bench/record.py, maerak/machine.py) on synthetic results."""
from __future__ import annotations

import json
import sys

import pytest

from bench import record, render
from maerak.cpu_dtype import MARGIN
from maerak.machine import cpu_class, machine

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


def test_a_degenerate_run_says_so_next_to_its_accuracy():
    line = "WARNING: degenerate predictions: inference_1 for 20 of 20 items (100%)"
    cell = render.accuracy({"n": 20, "correct": 7, "accuracy": 0.35, "degenerate": [line]})
    assert cell == "35.0% (7/20); **degenerate predictions: inference_1 for 20 of 20 items (100%)**"
    assert render.accuracy({"n": 20, "correct": 7, "accuracy": 0.35, "degenerate": []}) == "35.0% (7/20)"


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
    here = machine(render.ROOT)["cpu_class"]  # one file per bench and CPU class
    rec = json.loads((tmp_path / "res" / f"bench-fake-{here}.json").read_text(encoding="utf-8"))
    assert rec["output"] == "ratio 2.50x\n" and rec["results"] == {"ratio": 2.5} and rec["kind"] == "bench"
    assert rec["machine"]["torch_cpu_capability"] and rec["machine"]["cores"] >= 1
    script.write_text("import sys\nsys.exit(3)\n", encoding="utf-8")
    assert record.main(["broken", "--out", str(tmp_path / "res"), "--", str(script)]) == 3
    assert not list((tmp_path / "res").glob("bench-broken*"))


def test_machine_names_cpu_kernel_level_torch_and_commit():
    import torch

    m = machine(render.ROOT)
    assert m["torch"] == torch.__version__ and m["torch_cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert m["cpu"] and m["cores"] >= 1 and m["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "commit" in m["git"]  # None in an image built without GIT_COMMIT


@pytest.mark.parametrize("flags, want", [({"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}, "amx_bf16"),
                                         ({"avx2", "avx512f", "avx512_bf16"}, "avx512_bf16"), ({"avx2", "avx512f"}, "avx512f"),
                                         ({"avx2", "fma"}, "avx2"), (set(), "other")])
def test_cpu_class_is_the_bf16_hardware_or_else_the_widest_vector_unit(flags, want):
    assert cpu_class(flags) == want


def bench(name, cls, results):
    flags = {"avx2": ["avx2", "fma"], "avx512_bf16": ["avx2", "avx512f", "avx512_bf16"]}[cls]
    return {"kind": "bench", "name": name, "command": f".venv/bin/python bench/{name}.py", "output": "x\n",
            "results": results, "seconds": 1.0, "finished_utc": "2026-12-04T19:05:00Z",
            "machine": {**MACHINE, "cpu_flags": flags, "cpu_class": cls}}


def train_results(fp32_step, bf16_step, batch=4):
    return {"batch_size": batch, "official_shape": True, "best": {"answer": {"step_s": fp32_step}, "autocast": {"step_s": bf16_step}}}


def score_results(fp32_s, bf16_s, items=24, same=24):
    return {"rows": {"options|float32": {"items": items, "shared": fp32_s}, "options|bfloat16": {"items": items, "shared": bf16_s}},
            "dtype_agreement": {"options": {"same": same, "items": items, "ratio": fp32_s / bf16_s}}}


def test_official_cpu_minutes_per_cpu_class_come_from_that_class_records_and_the_profile_yamls():
    """Each class's row prices official-cpu (its YAMLs, the official sizes) in the dtype `auto` chooses
    from that class's probe; a class without the three records says which are missing."""
    from bench.official_shape import OFFICIAL_ITEMS
    from maerak import budget
    from maerak.profiles import get_profile

    fast = [bench("cpu_features", "avx512_bf16", {"float32_s": 0.10, "bfloat16_s": 0.05, "ratio": 2.0, "dtype": "bfloat16"}),
            bench("train_step_official", "avx512_bf16", train_results(8.0, 5.0)),
            bench("prefix_scoring", "avx512_bf16", score_results(12.0, 6.0, same=23))]
    slow = [bench("cpu_features", "avx2", {"float32_s": 0.10, "bfloat16_s": 0.85, "ratio": 0.12, "dtype": "float32"})]
    table = render.cpu_class_table(fast + slow)
    rows = {ln.split("|")[1].strip(): ln for ln in table.splitlines() if ln.startswith("| a")}
    assert "not measured (train_step_official, prefix_scoring" in rows["avx2"] and "| float32 |" in rows["avx2"]
    got = render.official_cpu_minutes(*(r["results"] for r in fast))
    assert got["choice"].dtype == "bfloat16" and got["choice"].ratio == pytest.approx(2.0) and 2.0 >= MARGIN
    profile = get_profile("official-cpu", render.ROOT)
    sequences = sum(budget.stage_plan(n, profile.stage_config(n), OFFICIAL_ITEMS["train"]).sequences
                    for n in profile.training_stages)
    items = OFFICIAL_ITEMS["dev"] + OFFICIAL_ITEMS["test"]
    assert got["estimate"].seconds == pytest.approx(sequences * 5.0 / 4 + items * 6.0 / 24)  # the bf16 rates
    assert got["epoch_s"] == pytest.approx(-(-OFFICIAL_ITEMS["train"] // 4) * 4 * 5.0 / 4)
    assert "| 2.00x | bfloat16 | 1.60x | 2.00x (23/24) |" in rows["avx512_bf16"]
    assert render.minutes(got["estimate"].seconds) in rows["avx512_bf16"]
    # the same records with a probe that says float32 price the run in float32
    fp32 = render.official_cpu_minutes({"float32_s": 0.10, "bfloat16_s": 0.2}, fast[1]["results"], fast[2]["results"])
    assert fp32["choice"].dtype == "float32"
    assert fp32["estimate"].seconds == pytest.approx(sequences * 8.0 / 4 + items * 12.0 / 24)
