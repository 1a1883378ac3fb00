"""Resume an interrupted Axolotl stage from its last checkpoint, and never from a stale one.

The stage YAMLs save `checkpoint-N/` every `save_steps`. Before a run, a marker in
the output directory records the run key (resolved config, training file, base
weights); a re-run with the same key resumes from the newest complete checkpoint
(Axolotl's `resume_from_checkpoint`), with another key it deletes the old checkpoints
and starts at step 0. After a stage finishes, its checkpoints are deleted: the final
weights are in the directory root, and a 9B checkpoint with optimizer states is ~36 GB.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from maerak import fingerprint as fp
from maerak.files import atomic_write_bytes, atomic_write_json

MARKER = ".maerak-run.json"
# HF Trainer writes trainer_state.json after the weights, optimizer and RNG states: its
# presence says the checkpoint was written completely.
COMPLETE = "trainer_state.json"


def run_key(config: Path, dataset: Path, base_model: str, extra: tuple[str, ...] = ()) -> str:
    """The stage's inputs by content (maerak/fingerprint.py): its YAML, training file and base weights
    (a hub id by name, and `extra`: e.g. its revision)."""
    base = Path(base_model)
    return fp.paths_digest([config, dataset, *([base] if base.is_dir() else [])], extra=[base_model, *extra])


def checkpoints(out: Path) -> list[Path]:
    found = [p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def resume_point(out: Path, key: str) -> Path | None:
    """The checkpoint to resume from, after removing half-written and stale ones; records `key`."""
    try:
        same = json.loads((out / MARKER).read_text(encoding="utf-8")).get("key") == key
    except (OSError, ValueError, AttributeError):
        same = False
    last = None
    for ckpt in checkpoints(out):
        if same and (ckpt / COMPLETE).is_file():
            last = ckpt
        else:
            why = "half-written" if same else "from a run with other inputs"
            print(f"removing {ckpt} ({why})", flush=True)
            shutil.rmtree(ckpt)
    if last is None:  # step 0: an earlier run's training log and TensorBoard events describe other weights
        (out / COMPLETE).unlink(missing_ok=True)
        shutil.rmtree(out / "runs", ignore_errors=True)
    atomic_write_json(out / MARKER, {"key": key})
    return last


def keep_log_history(out: Path) -> None:
    """Copy the last checkpoint's trainer_state.json (log_history: loss, lr, grad norm, ORPO rewards)
    into the stage directory before the checkpoints go: evaluate draws it (inference/curves.py)."""
    done = [c for c in checkpoints(out) if (c / COMPLETE).is_file()]
    if done:
        atomic_write_bytes(out / COMPLETE, (done[-1] / COMPLETE).read_bytes())
    else:  # a YAML without checkpoints: no curve rather than an earlier run's
        (out / COMPLETE).unlink(missing_ok=True)


def finish(out: Path) -> None:
    """The stage completed: its checkpoints are no longer needed."""
    for ckpt in checkpoints(out):
        shutil.rmtree(ckpt)
    (out / MARKER).unlink(missing_ok=True)
