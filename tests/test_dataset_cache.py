"""Axolotl's tokenized-data cache follows the training file's content (training/axolotl_run.py
dataset_cache): edit one row, train the stage again, and the rows Axolotl trained on hold the edit."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from conftest import save_tiny_checkpoint, write_stage_configs

from maerak.profiles import ROOT, Profile, resolve_profile
from training import axolotl_run as ar

STAGE2 = {
    "model_type": "AutoModelForCausalLM", "tokenizer_type": "AutoTokenizer", "seed": 0,
    "datasets": [{"path": "placeholder", "ds_type": "json", "type": "alpaca"}], "dataset_processes": 1,
    "val_set_size": 0, "sequence_len": 256, "max_steps": 1, "micro_batch_size": 2, "gradient_accumulation_steps": 1,
    "optimizer": "adamw_torch", "learning_rate": 1e-4, "lr_scheduler": "constant", "bf16": False, "fp16": False,
    "tf32": False, "attn_implementation": "sdpa", "save_strategy": "no",
}


def rows(word: str) -> list[dict]:
    return [{"instruction": f"row {i} says {word if i == 3 else 'same'}", "input": "", "output": "yes"} for i in range(6)]


def trained_text(cache: Path, model: Path) -> str:
    """Every row of the tokenized dataset Axolotl saved (and trained on), decoded."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    saved = [p.parent for p in cache.glob("*/dataset_info.json") if p.parent.name != "datasets"]
    assert list(cache.glob("datasets/json/*")), "the datasets library's cache is not in the content-keyed folder"
    assert len(saved) == 1, saved
    tok = AutoTokenizer.from_pretrained(model)
    return "\n".join(tok.decode(ids) for ids in load_from_disk(str(saved[0]))["input_ids"])


def test_an_edited_training_row_is_what_the_stage_trains_on(tmp_path):
    sample, _ = resolve_profile("sample", announce=False)
    profile = Profile(name="sample", settings={**sample.settings, "out": str(tmp_path / "out"),
                                               "axolotl_configs": str(tmp_path / "configs")}, root=ROOT)
    write_stage_configs(profile, STAGE2, STAGE2, base_model=tmp_path / "base")  # stage 1 only read for its paths
    save_tiny_checkpoint(profile.merged_dir)
    data = profile.stage_data(2)
    data.parent.mkdir(parents=True)
    texts = []
    for word in ("apple", "zebra"):
        # the edit replaces the file keeping its size and mtime (as `cp -p` or a tar restore would),
        # which neither Axolotl's key nor the datasets library's (path + mtime) sees
        new = tmp_path / f"{word}.jsonl"
        new.write_text("".join(json.dumps(r) + "\n" for r in rows(word)), encoding="utf-8")
        if data.exists():
            st = data.stat()
            assert st.st_size == new.stat().st_size
            os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
        subprocess.run(["cp", "-p", str(new), str(data)], check=True)
        ar.train(profile, 2)
        cache = Path(next(a for a in ar.overrides(profile.stage_config(2), 1, None, ar.dataset_cache(
            ROOT, profile.axolotl_config(2), profile.stage_config(2), data, str(profile.merged_dir)))
            if a.startswith("--dataset_prepared_path=")).split("=", 1)[1])
        texts.append(trained_text(cache, profile.merged_dir))
    assert "apple" in texts[0] and "zebra" not in texts[0]
    assert "zebra" in texts[1] and "apple" not in texts[1]  # the old cache was neither read nor kept
    assert len(list(cache.parent.iterdir())) == 1
