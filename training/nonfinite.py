"""Training stops at the first non-finite loss or gradient: one line naming the stage and the step.

Without this a NaN trains on silently: the Trainer's `logging_nan_inf_filter` (on by default)
replaces a NaN or infinite loss in the logged average by the average of the previous ones, the
optimizer steps on NaN gradients, every weight becomes NaN, and the stage exits 0 with a model
that scores NaN. Named from every stage YAML:

    plugins:
      - training.nonfinite.NonFiniteStopPlugin

Axolotl's builders (SFT and RL alike) add the plugin's callback to the Trainer
(`add_callbacks_pre_trainer`, axolotl/core/builders/base.py `get_callbacks`). The callback
- turns the logging filter off, so the logged loss is the real one;
- before each optimizer step, checks every gradient the process holds (the step is refused, so
  no weight is touched; under DeepSpeed ZeRO the gradients are partitioned and not in `.grad`,
  and the logged gradient norm below is the check);
- at each log, checks the loss, the gradient norm and every other logged number;
and raises `NonFiniteTrainingError`, which ends the Axolotl process with a non-zero exit; the
launcher (training/axolotl_run.py) quotes its line.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from axolotl.integrations.base import BasePlugin
from transformers import TrainerCallback


class NonFiniteTrainingError(RuntimeError):
    """A NaN or infinite loss or gradient during training."""


def stage_name(output_dir: Any) -> str:
    """The stage as the pipeline names it: its output folder (outputs/<profile>/stage2 -> stage2)."""
    return Path(str(output_dir)).name if output_dir else "training"


def first_non_finite(logs: dict[str, Any]) -> tuple[str, float] | None:
    """The first logged number that is NaN or infinite, loss and grad_norm first."""
    keys = sorted(logs, key=lambda k: (k not in ("loss", "grad_norm"), k))
    for key in keys:
        value = logs[key]
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isfinite(value):
            return key, float(value)
    return None


class NonFiniteStop(TrainerCallback):
    def __init__(self, stage: str):
        self.stage = stage

    def fail(self, step: int, what: str) -> None:
        line = f"{self.stage}: step {step}: {what}; training stopped"
        print(f"error: {line}", flush=True)
        raise NonFiniteTrainingError(line)

    def on_train_begin(self, args, state, control, **kwargs):
        args.logging_nan_inf_filter = False  # log the real loss, NaN included

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        import torch

        grads = [p.grad for p in (model.parameters() if model is not None else []) if p.grad is not None]
        if grads and not bool(torch.stack([g.isfinite().all() for g in grads]).all()):
            self.fail(state.global_step + 1, "non-finite gradient (NaN or inf) before the optimizer step")

    def on_log(self, args, state, control, logs=None, **kwargs):
        bad = first_non_finite(logs or {})
        if bad is not None:
            self.fail(state.global_step, f"{bad[0]} is {bad[1]}")


class NonFiniteStopPlugin(BasePlugin):
    """Axolotl plugin: adds `NonFiniteStop` to the Trainer of any stage."""

    def add_callbacks_pre_trainer(self, cfg, model) -> list:
        print(f"non-finite stop: on for {stage_name(cfg.output_dir)} (a NaN/inf loss or gradient ends training)",
              flush=True)
        return [NonFiniteStop(stage_name(cfg.output_dir))]
