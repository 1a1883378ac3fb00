"""`make test-e2e`: SIGKILL `./run.sh reproduce` at each step in turn, then run it again.

The pipeline runs in a copy of the repository (so outputs/ of the checkout is untouched)
on a `tiny` profile: the sample data and recipe, with a tiny Gemma-3 built in the test as
the base model, so each Axolotl stage takes seconds. Each re-run must skip every step that
finished, redo the one that was killed (a training stage resumes from its checkpoint), and
the last run must write the same submission bytes as an uninterrupted run.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml
from conftest import save_tiny_checkpoint, write_stage_configs

from maerak.profiles import Profile

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.e2e

STEPS = ["validate", "prepare", "train-stage1", "merge", "train-stage2", "train-stage3", "submit", "predict-dev", "evaluate"]
TINY = {
    "model_type": "AutoModelForCausalLM", "tokenizer_type": "AutoTokenizer", "seed": 0,
    "datasets": [{"path": "placeholder", "ds_type": "json", "type": "alpaca"}], "dataset_processes": 1, "val_set_size": 0,
    "sequence_len": 2048, "max_steps": 3, "micro_batch_size": 2, "gradient_accumulation_steps": 1,
    "optimizer": "adamw_torch", "learning_rate": 1e-3, "lr_scheduler": "cosine", "warmup_steps": 0,
    "bf16": False, "fp16": False, "tf32": False, "attn_implementation": "sdpa", "logging_steps": 1,
    "save_strategy": "steps", "save_steps": 1, "save_total_limit": 1, "save_only_model": False,
}
LORA = {"load_in_4bit": True, "adapter": "qlora", "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
        "lora_target_linear": True, "lora_qkv_kernel": False, "lora_o_kernel": False, "lora_mlp_kernel": False,
        "lora_embedding_kernel": False}


ORPO = {"rl": "orpo", "orpo_alpha": 0.1, "trainer_cls": "training.orpo_trainer.AnswerORPOTrainer",
        "datasets": [{"path": "placeholder", "ds_type": "json", "split": "train"}]}  # pairs, no `type`


def make_root(dest: Path) -> Path:
    """A copy of the checkout's tracked files, its .venv linked, and a `tiny` profile."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    (dest / ".venv").symlink_to((ROOT / ".venv").resolve())
    save_tiny_checkpoint(dest / "models" / "tiny")
    profiles = yaml.safe_load((dest / "profiles.yml").read_text(encoding="utf-8"))
    profiles["tiny"] = {**profiles["sample"], "axolotl_configs": "axolotl_configs/tiny",
                        "offline": False, "description": "test: tiny Gemma-3 on the sample data"}
    (dest / "profiles.yml").write_text(yaml.safe_dump(profiles, allow_unicode=True), encoding="utf-8")
    profile = Profile(name="tiny", settings=profiles["tiny"], root=dest)
    write_stage_configs(profile, {**TINY, **LORA}, {**TINY, "learning_rate": 1e-4}, base_model="models/tiny",
                        stage3={**TINY, **ORPO, "learning_rate": 1e-4})
    return dest


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1"}


def reproduce(root: Path, kill_at: str | None = None) -> tuple[str, bool]:
    """Run reproduce; with kill_at, SIGKILL its process group while that step runs
    (training stages: once a checkpoint is on disk; the merge: once its directory exists)."""
    proc = subprocess.Popen(["./run.sh", "reproduce", "--profile", "tiny"], cwd=root, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    out = root / "outputs" / "tiny"
    ready = {
        "train-stage1": lambda: any((out / "stage1").glob("checkpoint-*/trainer_state.json")),
        "train-stage2": lambda: any((out / "stage2").glob("checkpoint-*/trainer_state.json")),
        "train-stage3": lambda: any((out / "stage3").glob("checkpoint-*/trainer_state.json")),
        "merge": lambda: (out / "stage1" / "merged").exists(),
    }
    killed = False
    if kill_at is not None:
        head = re.compile(rf"=== \[\d+/\d+\] {re.escape(kill_at)}: \./run\.sh")
        while proc.poll() is None and not any(head.search(ln) for ln in list(lines)):
            time.sleep(0.05)
        deadline = time.time() + 300
        while proc.poll() is None and not ready.get(kill_at, lambda: True)() and time.time() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
    proc.wait(timeout=1800)
    reader.join(timeout=10)
    text = "".join(lines)
    assert killed or proc.returncode == 0, text[-4000:]
    return text, killed


def status(text: str) -> dict[str, str]:
    """step -> 'skipped' | 'ok' | 'started' (killed in it) in one run's output."""
    out: dict[str, str] = {}
    for step in STEPS:
        s = re.escape(step)
        if re.search(rf"\] {s}: skipped", text):
            out[step] = "skipped"
        elif re.search(rf"=== {s}: ok", text):
            out[step] = "ok"
        elif re.search(rf"\] {s}: \./run\.sh", text):
            out[step] = "started"
    return out


def test_kill_at_each_step_then_resume(tmp_path):
    reference = make_root(tmp_path / "ref")
    text, _ = reproduce(reference)
    assert all(v == "ok" for v in status(text).values()) and len(status(text)) == len(STEPS)
    again, _ = reproduce(reference)
    assert set(status(again).values()) == {"skipped"}, again[-3000:]  # nothing to redo

    root = make_root(tmp_path / "killed")
    done: set[str] = set()
    interrupted = None
    nxt = 0  # the index of the next step to kill in; past the end: a run left to finish
    while True:
        step = STEPS[nxt] if nxt < len(STEPS) else None
        text, killed = reproduce(root, kill_at=step)
        st = status(text)
        assert all(st.get(s) == "skipped" for s in done), (step, st)  # finished steps are not redone
        if interrupted is not None:
            assert st.get(interrupted) == "ok", (interrupted, st)  # the killed step is redone
            if interrupted.startswith("train-stage"):
                assert f"stage {interrupted[-1]}: resuming from" in text  # from its checkpoint, not step 0
        done |= {s for s, v in st.items() if v == "ok"}
        if not killed:
            break
        started = [s for s, v in st.items() if v == "started"]
        # SIGKILL lands in `step`, or (a step that takes milliseconds, like validate) in the next one
        assert len(started) == 1 and STEPS.index(started[0]) >= STEPS.index(step), (step, st)
        interrupted = started[0]
        nxt = STEPS.index(interrupted) + 1
    assert done == set(STEPS)
    out, ref = root / "outputs" / "tiny", reference / "outputs" / "tiny"
    assert (out / "submission.json").read_bytes() == (ref / "submission.json").read_bytes()
    assert (out / "dev_predictions.json").read_bytes() == (ref / "dev_predictions.json").read_bytes()
    assert not list((out / "stage2").glob("checkpoint-*"))  # removed once the stage finished
    assert not list((out / "stage3").glob("checkpoint-*"))
