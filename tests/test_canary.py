"""The learning canary: what the scorer reads is what training taught.

An untrained model, a broken answer token, a label mapped to the wrong option after
augmentation, or a loss that never reaches the letter all give the same dull
submission. Here a tiny model goes through the real path — `prepare` (cleaning,
dedup, cyclic option-order augmentation) → Axolotl with the sample stage-2 YAML
(answer-position plugin on; only steps, batch and learning rate changed) → `submit` —
on a handful of items whose answer follows a planted rule (the option that reads
"정답입니다"; wherever augmentation puts it, the letter must follow it), and
must answer all of them by the rule. With the labels moved off the marked option
the same check must fail.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from maerak import modes
from maerak.profiles import ROOT, Profile
from tests.conftest import write_stage_configs

ITEMS = 6
RIGHT, WRONG = "정답입니다", "아닙니다"
LABELS = ("inference_1", "inference_2", "inference_3")
# Measured in-process on these 18 rows: all 6 items right from step ~150 at lr 1e-3 (3e-3 diverges to chance).
CANARY_TRAINING = {"max_steps": 210, "micro_batch_size": 6, "learning_rate": 1.0e-3, "lr_scheduler": "constant",
                   "sequence_len": 1024, "save_steps": 100_000}  # no mid-run checkpoints: they cost more than the steps


def planted_items(sample_dir: Path) -> list[dict]:
    """Sample train items (their conversations and questions) whose labelled option reads RIGHT, the others WRONG."""
    items = json.loads((sample_dir / "train.json").read_text(encoding="utf-8"))[:ITEMS]
    for it in items:
        it["input"].update({key: RIGHT if key == it["output"] else WRONG for key in LABELS})
    return items


def moved_labels(items: list[dict]) -> list[dict]:
    """The same items, each label moved to the next option: training no longer follows the rule."""
    return [{**it, "output": LABELS[(LABELS.index(it["output"]) + 1) % 3]} for it in items]


def train_and_score(root: Path, model_dir: Path, sample_dir: Path, train_items: list[dict], truth: list[dict],
                    training: dict = CANARY_TRAINING, mode: str = "letters") -> float:
    """prepare → Axolotl stage 2 (sample YAML + `training`) from `model_dir` → submit; accuracy against `truth`.
    `mode` is the scoring mode of both the training rows and submit."""
    from inference.submit import main as submit_main
    from preprocessing import config, prepare
    from training import axolotl_run as ar

    data = root / "data"
    data.mkdir(parents=True)
    (data / "train.json").write_text(json.dumps(train_items, ensure_ascii=False), encoding="utf-8")
    for split in ("dev", "test"):
        shutil.copy(sample_dir / f"{split}.json", data / f"{split}.json")
    stage1 = yaml.safe_load((ROOT / "axolotl_configs" / "sample" / "stage1_qlora.yml").read_text(encoding="utf-8"))
    stage2 = yaml.safe_load((ROOT / "axolotl_configs" / "sample" / "stage2_full.yml").read_text(encoding="utf-8"))
    profile = Profile(name="canary", root=root, settings={
        "data_dir": "data", "axolotl_configs": "axolotl_configs", "offline": True,
        "sources": str(ROOT / "preprocessing" / "sources.yml"), "scoring": {"mode": mode}})

    write_stage_configs(profile, {**stage1, "seed": 0}, {**stage2, "seed": 0, **training}, base_model="model")
    cfg = config.load_config(profile)
    prepare.run(profile, cfg, progress=False)
    rows = (profile.prepared / "stage2.jsonl").read_text(encoding="utf-8").splitlines()
    # letters: cyclic augmentation, every item with its answer at A, B and C; options: one row per item
    assert len(rows) == (3 if mode == "letters" else 1) * len(train_items)

    profile.merged_dir.parent.mkdir(parents=True)
    profile.merged_dir.symlink_to(model_dir, target_is_directory=True)  # stage 2 starts from "stage 1 merged"
    out = ar.train(profile, 2)
    assert modes.read_record(out) is modes.mode_named(mode)  # what submit will score it in

    submission = root / "submission.json"
    scored = root / "scored.json"
    scored.write_text(json.dumps(truth, ensure_ascii=False), encoding="utf-8")
    assert submit_main(["--profile", "sample", "--model", str(out), "--input", str(scored), "--output", str(submission),
                        "--mode", mode, "--no-cache", "--quiet"]) == 0
    answers = [it["output"] for it in json.loads(submission.read_text(encoding="utf-8"))]
    return sum(a == t["output"] for a, t in zip(answers, truth)) / len(truth)


@pytest.mark.parametrize("mode", ["letters", "options"])
def test_tiny_model_learns_the_planted_rule_through_the_real_path(tmp_path, tiny_model_dir, sample_dir, mode):
    # options mode: the rows answer with the option's text, so the model learns to say RIGHT after the
    # context, and the option reading RIGHT must then have the highest likelihood
    items = planted_items(sample_dir)
    assert train_and_score(tmp_path, tiny_model_dir, sample_dir, items, items, mode=mode) == 1.0


@pytest.mark.parametrize("mode", ["letters", "options"])
def test_the_canary_fails_when_the_labels_do_not_follow_the_rule(tmp_path, tiny_model_dir, sample_dir, mode):
    items = planted_items(sample_dir)
    assert train_and_score(tmp_path, tiny_model_dir, sample_dir, moved_labels(items), items, mode=mode) < 1.0


@pytest.mark.parametrize("shift", [0, 1])
def test_planted_and_moved_labels(sample_dir, shift):
    items = planted_items(sample_dir)
    moved = moved_labels(items) if shift else items
    assert all((it["input"][it["output"]] == RIGHT) == (shift == 0) for it in moved)


# Stage 2 of the embedded model on the 60 sample train items (180 augmented rows, 90 steps an epoch at
# micro-batch 2). The budget below is an estimate, not yet measured on the 2-core machine (see the report).
OVERFIT_TRAINING = {"max_steps": 270, "learning_rate": 1.0e-4, "lr_scheduler": "constant", "save_steps": 100_000}


@pytest.mark.e2e
def test_embedded_model_stage2_overfits_the_sample_train_items(tmp_path, sample_dir):
    model = ROOT / "models" / "gemma-3-270m"
    if not (model / "config.json").is_file():
        pytest.skip("embedded model not built: ./run.sh model")
    items = json.loads((sample_dir / "train.json").read_text(encoding="utf-8"))
    assert train_and_score(tmp_path, model.resolve(), sample_dir, items, items, OVERFIT_TRAINING) >= 0.95
