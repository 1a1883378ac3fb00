"""Manifest and verify on a tmp profile tree, with a fake submit (no model needed).

The fake submit is deterministic: each item's label is derived from the bytes
of the checkpoint and the item id, so the same checkpoint gives a byte-identical
file, as the real CPU float32 scorer does.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from maerak.files import atomic_write_json, dumps_json
from maerak.manifest import build_manifest, write_manifest
from maerak.profiles import Profile, probs_path
from pipeline.verify import main as verify_main
from tests.conftest import write_stage_configs

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def fake_submit(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--profile")
    p.add_argument("--model", nargs="+")
    p.add_argument("--input", type=Path)
    p.add_argument("--output", type=Path)
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    model = Path(args.model[0])
    weights = b"".join(f.read_bytes() for f in sorted(model.rglob("*")) if f.is_file())
    items = json.loads(args.input.read_text(encoding="utf-8"))
    rows = []
    for item in items:
        n = hashlib.sha256(weights + str(item["id"]).encode()).digest()[0] % 3 + 1
        item["output"] = f"inference_{n}"
        rows.append({"id": item["id"], "probs": [0.6 if k == n else 0.2 for k in (1, 2, 3)], "prediction": item["output"]})
    atomic_write_json(args.output, items)
    atomic_write_json(probs_path(args.output), {"items": rows})
    return 0


def evaluate_dev(profile: Profile) -> None:
    """eval/ as `./run.sh evaluate` writes it, from the dev predictions."""
    from inference.evaluate import compute_metrics, read_predictions, read_probs, write_report
    from maerak.schema import load_items

    gold = load_items(profile.split_file("dev"), require_labels=True)[0]
    metrics = compute_metrics(read_predictions(profile.dev_predictions), gold, read_probs(profile.dev_predictions))
    write_report(metrics, profile.eval_dir, str(profile.dev_predictions), str(profile.split_file("dev")))


def make_tree(root: Path, needs_gpu: bool = False) -> Profile:
    settings = {
        "data_dir": "data/sample",
        "axolotl_configs": "axolotl_configs/sample",
        "sources": "preprocessing/sources.yml",
        "needs_gpu": needs_gpu,
        "offline": True,
        "scoring": {"dtype": "bfloat16" if needs_gpu else "float32", "tta": "none"},
    }
    (root / "profiles.yml").write_text("sample:\n  seed: 42\n", encoding="utf-8")
    shutil.copytree(SAMPLE, root / "data" / "sample", ignore=shutil.ignore_patterns("README.md", "test_answers.json"))
    (root / "models" / "tiny").mkdir(parents=True)
    (root / "models" / "tiny" / "config.json").write_text('{"hidden_size": 32}\n')
    (root / "models" / "tiny" / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    cfg = root / "axolotl_configs" / "sample"
    cfg.mkdir(parents=True)
    (root / "preprocessing").mkdir()
    (root / "preprocessing" / "sources.yml").write_text("official: {path: data/sample}\n")
    profile = Profile(name="sample", settings=settings, root=root)
    write_stage_configs(profile, {"base_model": "models/tiny", "seed": 42, "adapter": "qlora", "lora_r": 16,
                                  "learning_rate": 2.0e-5}, {"micro_batch_size": 3, "learning_rate": 2.0e-5})
    profile.prepared.mkdir(parents=True)
    (profile.prepared / "stage1.jsonl").write_text('{"instruction": "x", "output": "A"}\n')
    (profile.prepared / "stage2.jsonl").write_text('{"instruction": "y", "output": "B"}\n')
    (profile.prepared / "report.json").write_text("{}\n")
    profile.stage2_dir.mkdir(parents=True)
    (profile.stage2_dir / "config.json").write_text('{"model_type": "gemma3_text"}\n')
    (profile.stage2_dir / "model.safetensors").write_bytes(bytes(range(256)) * 16)
    (profile.stage2_dir / "tokenizer.json").write_text('{"version": "1.0"}\n')
    assert fake_submit(["--model", str(profile.stage2_dir), "--input", str(profile.split_file("test")),
                        "--output", str(profile.submission)]) == 0
    assert fake_submit(["--model", str(profile.stage2_dir), "--input", str(profile.split_file("dev")),
                        "--output", str(profile.dev_predictions)]) == 0
    evaluate_dev(profile)
    write_manifest(profile)
    return profile


@pytest.fixture
def profile(tmp_path) -> Profile:
    return make_tree(tmp_path)


def run_verify(profile: Profile, capsys, *extra: str) -> tuple[int, str]:
    rc = verify_main(list(extra), submit=fake_submit, profile=profile)
    cap = capsys.readouterr()
    return rc, cap.out + cap.err


def flip_byte(path: Path, offset: int = -2) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# ---------------------------------------------------------------- the manifest
def test_manifest_records_hashes_versions_and_run(profile):
    m = json.loads(profile.manifest.read_text(encoding="utf-8"))
    assert m["profile"] == "sample" and m["seed"] == 42
    paths = {f["path"]: f for f in m["files"]}
    from maerak.fingerprint import file_sha256 as sha256_file

    for rel in ("data/sample/train.json", "data/sample/dev.json", "data/sample/test.json", "profiles.yml",
                "axolotl_configs/sample/stage1_qlora.yml", "axolotl_configs/sample/stage2_full.yml",
                "preprocessing/sources.yml", "models/tiny/model.safetensors",
                "outputs/sample/stage2/model.safetensors", "outputs/sample/stage2/tokenizer.json",
                "outputs/sample/submission.json", "outputs/sample/dev_predictions.json"):
        assert paths[rel]["sha256"] == sha256_file(profile.root / rel), rel
    assert {f["group"] for f in m["files"]} >= {"inputs", "base_model", "configs", "checkpoint", "outputs"}
    for pkg in ("python", "torch", "transformers", "peft", "axolotl", "bitsandbytes", "accelerate", "datasets"):
        assert pkg in m["packages"]
    assert m["packages"]["python"].count(".") == 2
    assert m["submit"] == {"checkpoint": "outputs/sample/stage2", "input": "data/sample/test.json",
                           "submission": "outputs/sample/submission.json", "compare": "bytes",
                           "scoring": {"batch_size": 4, "max_length": 1024, "dtype": "float32", "tta": "none",
                                       "mode": "letters"}}  # every default filled in: what the run scored with
    assert set(m["git"]) == {"commit", "dirty", "source"}
    # The stage YAMLs are the files Axolotl ran: no resolved copies beside them.
    assert not any(f["path"].startswith("outputs/sample/configs/") for f in m["files"])
    # Relative paths only: the same manifest checks on the host and in the container.
    assert not any(Path(f["path"]).is_absolute() for f in m["files"])


def test_missing_optional_files_are_recorded_not_fatal(tmp_path):
    profile = Profile(name="sample", settings={"data_dir": "data/raw",
                                               "axolotl_configs": "axolotl_configs/competition",
                                               "needs_gpu": True, "scoring": {"dtype": "bfloat16"}}, root=tmp_path)
    write_stage_configs(profile, {"base_model": "google/gemma-2-9b-it"}, {})
    m = build_manifest(profile, extra={"dev_accuracy": 0.5})
    assert m["dev_accuracy"] == 0.5
    assert m["base_model"] == {"name": "google/gemma-2-9b-it", "local": False,  # not in this machine's hub cache
                               "revision": None, "commit": None, "sha256": None}
    assert {"lock", "torch", "cuda", "device"} <= set(m["environment"])
    assert m["submit"]["compare"] == "labels"
    assert all(f.get("missing") and f["sha256"] is None for f in m["files"]
               if not f["path"].startswith("axolotl_configs/competition/stage"))
    assert any(f["path"] == "outputs/sample/stage2" for f in m["files"])


# ---------------------------------------------------------------- verify
def test_untouched_tree_passes(profile, capsys):
    rc, out = run_verify(profile, capsys)
    assert rc == 0, out
    assert "re-run submit (bytes)" in out and "byte-identical" in out
    assert "MISMATCH" not in out
    assert "verify: OK" in out


@pytest.mark.parametrize("rel", [
    "data/sample/train.json",                   # an input
    "axolotl_configs/sample/stage2_full.yml",   # a config
    "axolotl_configs/sample/stage1_qlora.yml",  # the other stage config (base model and seed are there)
    "models/tiny/model.safetensors",            # the base model
])
def test_changed_input_or_config_fails(profile, capsys, rel):
    flip_byte(profile.root / rel)
    rc, out = run_verify(profile, capsys)
    assert rc == 1
    row = next(line for line in out.splitlines() if line.startswith(rel))
    assert "MISMATCH: sha256 differs" in row
    assert "verify: FAILED" in out and f"{rel}: MISMATCH" in out


def test_changed_checkpoint_byte_fails(profile, capsys):
    flip_byte(profile.stage2_dir / "model.safetensors", offset=100)
    rc, out = run_verify(profile, capsys)
    assert rc == 1
    assert any(line.startswith("outputs/sample/stage2/model.safetensors") and "sha256 differs" in line
               for line in out.splitlines())
    # The re-run from the changed checkpoint no longer gives the recorded file (for this fake scorer).
    assert "re-run submit (bytes)" in out


def test_changed_submission_byte_fails(profile, capsys):
    text = profile.submission.read_text(encoding="utf-8")
    profile.submission.write_text(text.replace("inference_1", "inference_2", 1), encoding="utf-8")
    rc, out = run_verify(profile, capsys)
    assert rc == 1
    assert any(line.startswith("outputs/sample/submission.json") and "sha256 differs" in line for line in out.splitlines())
    assert any(line.startswith("re-run submit (bytes)") and "bytes differ" in line for line in out.splitlines())


def test_non_deterministic_submit_fails_in_bytes_mode(profile, capsys):
    def drifting_submit(argv):
        fake_submit(argv)
        out = Path(argv[argv.index("--output") + 1])
        out.write_text(out.read_text(encoding="utf-8") + "\n", encoding="utf-8")
        return 0

    rc = verify_main([], submit=drifting_submit, profile=profile)
    out = capsys.readouterr().out
    assert rc == 1 and "bytes differ" in out


def test_added_checkpoint_file_fails(profile, capsys):
    (profile.stage2_dir / "model-00002.safetensors").write_bytes(b"extra")
    rc, out = run_verify(profile, capsys)
    assert rc == 1 and "file not in the manifest" in out


def test_manifest_covers_everything_a_judge_reads(profile):
    paths = {f["path"] for f in json.loads(profile.manifest.read_text(encoding="utf-8"))["files"]}
    assert {"outputs/sample/eval/metrics.json", "outputs/sample/eval/report.md", "outputs/sample/submission.probs.json",
            "outputs/sample/dev_predictions.probs.json"} <= paths


def test_untouched_tree_recomputes_the_dev_accuracy(profile, capsys):
    rc, out = run_verify(profile, capsys)
    claimed = json.loads((profile.eval_dir / "metrics.json").read_text(encoding="utf-8"))
    row = next(line for line in out.splitlines() if line.startswith("dev accuracy (recomputed)"))
    assert rc == 0 and "OK" in row and f"({claimed['correct']}/{claimed['n']})" in row


@pytest.mark.parametrize("rehash", [False, True])
def test_forged_metrics_fail(profile, capsys, rehash):
    """accuracy 0.35 → 0.95 in metrics.json (and the report's line): the hash differs, and with the
    manifest rewritten over the forgery the recomputed accuracy still does not match."""
    path = profile.eval_dir / "metrics.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    m.update(accuracy=0.95, correct=19)
    path.write_text(json.dumps(m), encoding="utf-8")
    if rehash:
        write_manifest(profile)
    rc, out = run_verify(profile, capsys)
    assert rc == 1
    assert any(line.startswith("dev accuracy (recomputed)") and "claims another accuracy" in line for line in out.splitlines())
    assert rehash or any(line.startswith("outputs/sample/eval/metrics.json") and "sha256 differs" in line
                         for line in out.splitlines())


def test_forged_report_line_fails_even_rehashed(profile, capsys):
    report = profile.eval_dir / "report.md"
    text = report.read_text(encoding="utf-8")
    start = text.index("**Accuracy: ")
    end = text.index("\n", start)
    report.write_text(text[:start] + "**Accuracy: 95.00%** (19/20)" + text[end:], encoding="utf-8")
    write_manifest(profile)
    rc, out = run_verify(profile, capsys)
    assert rc == 1 and "does not state" in out


@pytest.mark.parametrize("which", ["submission", "dev_predictions"])
def test_edited_probs_file_fails(profile, capsys, which):
    path = probs_path(getattr(profile, which))
    data = json.loads(path.read_text(encoding="utf-8"))
    data["items"][0]["probs"] = [0.9, 0.05, 0.05]
    path.write_text(json.dumps(data), encoding="utf-8")
    rc, out = run_verify(profile, capsys)
    rel = path.relative_to(profile.root).as_posix()
    assert rc == 1 and any(line.startswith(rel) and "sha256 differs" in line for line in out.splitlines())


def test_probs_that_predict_otherwise_fail_even_rehashed(profile, capsys):
    path = probs_path(profile.dev_predictions)
    data = json.loads(path.read_text(encoding="utf-8"))
    data["items"][0]["prediction"] = next(x for x in ("inference_1", "inference_2") if x != data["items"][0]["prediction"])
    path.write_text(json.dumps(data), encoding="utf-8")
    write_manifest(profile)
    rc, out = run_verify(profile, capsys)
    assert rc == 1 and "predicts otherwise" in out


@pytest.mark.parametrize("name", [".hidden_adapter.safetensors", "sub/.extra"])
def test_an_extra_hidden_file_in_the_checkpoint_fails(profile, capsys, name):
    (profile.stage2_dir / name).parent.mkdir(exist_ok=True)
    (profile.stage2_dir / name).write_bytes(b"extra")
    rc, out = run_verify(profile, capsys)
    assert rc == 1 and f"outputs/sample/stage2/{name}" in out and "file not in the manifest" in out


def test_a_hidden_file_recorded_in_the_checkpoint_is_hashed(profile, capsys):
    (profile.stage2_dir / ".hidden").write_bytes(b"one")
    write_manifest(profile)  # (the fake submit reads every file: its recorded submission is now another)
    assert run_verify(profile, capsys, "--no-rerun")[0] == 0
    (profile.stage2_dir / ".hidden").write_bytes(b"two")
    rc, out = run_verify(profile, capsys, "--no-rerun")
    assert rc == 1 and any(line.startswith("outputs/sample/stage2/.hidden") and "sha256 differs" in line
                           for line in out.splitlines())


def test_an_extra_file_in_eval_fails(profile, capsys):
    (profile.eval_dir / "extra.md").write_text("**Accuracy: 95.00%**\n", encoding="utf-8")
    rc, out = run_verify(profile, capsys)
    assert rc == 1 and "outputs/sample/eval/extra.md" in out and "file not in the manifest" in out


def test_missing_checkpoint_fails(profile, capsys):
    shutil.rmtree(profile.stage2_dir)
    rc, out = run_verify(profile, capsys)
    assert rc == 1 and "file missing" in out and "(no checkpoint)" in out


def test_failing_submit_fails(profile, capsys):
    rc = verify_main([], submit=lambda argv: 3, profile=profile)
    assert rc == 1 and "submit exited 3" in capsys.readouterr().out


def test_missing_manifest_fails(profile, capsys):
    profile.manifest.unlink()
    rc, out = run_verify(profile, capsys)
    assert rc == 1 and "no manifest" in out


def test_absent_optional_file_stays_ok(tmp_path, capsys):
    profile = make_tree(tmp_path)
    profile.dev_predictions.unlink()  # no dev run: no predictions, probabilities or evaluation
    probs_path(profile.dev_predictions).unlink()
    shutil.rmtree(profile.eval_dir)
    write_manifest(profile)
    rc, out = run_verify(profile, capsys)
    assert rc == 0 and "absent, as recorded" in out and "no dev evaluation recorded" in out
    profile.dev_predictions.write_text("[]\n")
    rc, out = run_verify(profile, capsys)
    assert rc == 1 and "recorded as missing, now present" in out


def test_gpu_profile_compares_labels(tmp_path, capsys):
    """bf16 GPU scoring is not bit-deterministic: same labels pass even when bytes differ, a changed label fails."""
    profile = make_tree(tmp_path, needs_gpu=True)

    def reformatting_submit(argv):  # same answers, different bytes (as last-bit score changes would do to probs)
        fake_submit(argv)
        out = Path(argv[argv.index("--output") + 1])
        out.write_text(json.dumps(json.loads(out.read_text(encoding="utf-8")), ensure_ascii=False), encoding="utf-8")
        return 0

    rc = verify_main([], submit=reformatting_submit, profile=profile)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "re-run submit (labels)" in out and "not bit-deterministic" in out

    def one_label_off(argv):
        fake_submit(argv)
        out = Path(argv[argv.index("--output") + 1])
        items = json.loads(out.read_text(encoding="utf-8"))
        items[0]["output"] = "inference_3" if items[0]["output"] != "inference_3" else "inference_1"
        out.write_text(dumps_json(items), encoding="utf-8")
        return 0

    rc = verify_main([], submit=one_label_off, profile=profile)
    out = capsys.readouterr().out
    assert rc == 1 and "1 of" in out and "labels differ" in out


def test_cli_routes_to_verify():
    from pipeline.cli import VERBS

    assert VERBS["verify"].module == "pipeline.verify"
