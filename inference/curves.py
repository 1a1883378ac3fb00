"""Training curves: each stage's `trainer_state.json` log_history drawn as one PNG.

The HF Trainer records every `logging_steps` a row of numbers (loss, learning_rate,
grad_norm; TRL's ORPO adds rewards/chosen, rewards/rejected, rewards/margins) in
`log_history`, saved in each `checkpoint-N/trainer_state.json`. The stage's checkpoints
are deleted when it ends (training/resume.py), so training/axolotl_run.py copies the
last one's trainer_state.json into the stage directory; `./run.sh evaluate` draws it
next to the confusion matrix in eval/report.md.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from maerak.files import atomic_write_bytes
from maerak.schema import DataError, Problem, read_json

STATE = "trainer_state.json"
# Panels of one figure: (title, keys drawn in it). A panel whose keys never appear is left out.
PANELS = (
    ("loss", ("loss", "nll_loss")),
    ("learning rate", ("learning_rate",)),
    ("grad norm", ("grad_norm",)),
    ("ORPO rewards", ("rewards/chosen", "rewards/rejected", "rewards/margins")),
)


def read_log_history(path: Path) -> list[dict[str, Any]]:
    """The `log_history` rows of a trainer_state.json (a DataError naming the file when malformed)."""
    data = read_json(path)
    rows = data.get("log_history") if isinstance(data, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise DataError([Problem(str(path), "-", "log_history", "missing or not a list of objects")])
    return rows


def series(history: Sequence[Mapping[str, Any]]) -> dict[str, tuple[list[int], list[float]]]:
    """key -> (steps, values) for every drawn key; non-finite values are dropped (counted in `skipped`)."""
    out: dict[str, tuple[list[int], list[float]]] = {}
    for row in history:
        step = row.get("step")
        if not isinstance(step, int):
            continue
        for _, keys in PANELS:
            for key in keys:
                v = row.get(key)
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    xs, ys = out.setdefault(key, ([], []))
                    xs.append(step)
                    ys.append(float(v))
    return out


def nonfinite(history: Sequence[Mapping[str, Any]]) -> list[tuple[int, str]]:
    """(step, key) of logged values that are NaN or infinite: said in the report, not drawn."""
    bad = []
    for row in history:
        for _, keys in PANELS:
            for key in keys:
                v = row.get(key)
                if isinstance(v, float) and not math.isfinite(v):
                    bad.append((row.get("step"), key))
    return bad


def png_bytes(fig) -> bytes:
    """A figure as PNG bytes, without the matplotlib version in its metadata (same plot, same bytes)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    return buf.getvalue()


def draw(stage: str, data: Mapping[str, tuple[list[int], list[float]]]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(title, [k for k in keys if k in data]) for title, keys in PANELS]
    panels = [(t, ks) for t, ks in panels if ks]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.2), squeeze=False)
    for ax, (title, keys) in zip(axes[0], panels):
        for key in keys:
            xs, ys = data[key]
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, ms=3, label=key)
        ax.set_title(title)
        ax.set_xlabel("optimizer step")
        if len(keys) > 1:
            ax.legend(fontsize=7)
    fig.suptitle(stage)
    fig.tight_layout()
    png = png_bytes(fig)
    plt.close(fig)
    return png


def render_curves(stages: Mapping[str, Path]) -> tuple[dict[str, bytes], list[str]]:
    """One `curves_<stage>.png` per stage with a trainer_state.json: ({PNG name: bytes}, report notes)."""
    pngs, notes = {}, []
    for stage, stage_dir in stages.items():
        path = stage_dir / STATE
        if not path.is_file():
            notes.append(f"{stage}: no `{path}` (stage not run, or trained before curves were recorded)")
            continue
        history = read_log_history(path)
        data = series(history)
        if not data:
            notes.append(f"{stage}: `{path}` has no logged loss")
            continue
        for step, key in nonfinite(history):
            notes.append(f"{stage}: step {step}: {key} is not finite (not drawn)")
        pngs[f"curves_{stage}.png"] = draw(stage, data)
    return pngs, notes


def write_curves(stages: Mapping[str, Path], out: Path) -> tuple[list[str], list[str]]:
    """render_curves, written into `out`; returns (PNG names, report notes)."""
    pngs, notes = render_curves(stages)
    for name, data in pngs.items():
        atomic_write_bytes(out / name, data)
    return list(pngs), notes
