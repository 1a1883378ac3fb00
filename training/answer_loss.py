"""Answer-position logits: the LM head runs only where the loss is.

A stage-2 row is ~500 prompt tokens and 2 trained tokens (answer letter, EOS). The
standard causal-LM forward projects every position through the vocabulary head
(256k rows for Gemma-2, 262k for Gemma-3), upcasts those logits to fp32 for the loss
and then ignores all but the trained positions. With this switched on, a forward that
gets `labels` asks the model for logits only at the positions whose *shifted* label is
trained (transformers' `logits_to_keep`, so the model's own head and Gemma's final
logit softcapping run, on fewer rows) and computes the loss with the model's own
`loss_function` on those positions: the same loss and gradients, fewer FLOPs and bytes.

Correct with sample packing (several sequences in one row: their prompt and boundary
labels are -100 like any other ignored position), gradient checkpointing (the decoder
is untouched) and PEFT-wrapped models (the wrapped causal LM is patched).

Switched on from a stage YAML:

    plugins:
      - training.answer_loss.AnswerLossPlugin
"""
from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
import torch.nn.functional as F
from axolotl.integrations.base import BasePlugin

IGNORE_INDEX = -100
MARK = "_maerak_answer_loss"


def shift(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Target of each position (label of the next token), as transformers' ForCausalLMLoss shifts them."""
    return F.pad(labels, (0, 1), value=ignore_index)[..., 1:]


def trained_positions(shift_labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Sorted sequence positions that have a trained target in at least one row of the batch."""
    return (shift_labels != ignore_index).any(dim=0).nonzero().flatten()


def causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers causal LM inside `model` (itself, or the model under a PEFT wrapper)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = inner.get_output_embeddings() if hasattr(inner, "get_output_embeddings") else None
    if head is None:
        raise ValueError(f"answer-position loss: {type(inner).__name__} has no output embeddings (lm_head)")
    if "logits_to_keep" not in inspect.signature(inner.forward).parameters:
        raise ValueError(f"answer-position loss: {type(inner).__name__}.forward takes no `logits_to_keep`")
    return inner


def enable(model: torch.nn.Module) -> torch.nn.Module:
    """Patch the causal LM inside `model` (in place, once); returns the patched module."""
    inner = causal_lm(model)
    if getattr(inner, MARK, False):
        return inner
    forward = inner.forward

    @functools.wraps(forward)
    def answer_forward(*args: Any, labels: torch.Tensor | None = None, logits_to_keep: int | torch.Tensor = 0,
                       **kwargs: Any):
        shift_labels = kwargs.pop("shift_labels", None)
        explicit_keep = not (isinstance(logits_to_keep, int) and logits_to_keep == 0)
        if (labels is None and shift_labels is None) or explicit_keep:
            # Generation, scoring, or a caller that chose its own positions: the model's own path.
            if shift_labels is not None:
                kwargs["shift_labels"] = shift_labels
            return forward(*args, labels=labels, logits_to_keep=logits_to_keep, **kwargs)
        ignore_index = kwargs.get("ignore_index", IGNORE_INDEX)
        if shift_labels is None:
            shift_labels = shift(labels, ignore_index)
        keep = trained_positions(shift_labels, ignore_index)
        out = forward(*args, labels=None, logits_to_keep=keep, **kwargs)
        targets = shift_labels[:, keep].contiguous()
        out.loss = inner.loss_function(out.logits, None, out.logits.shape[-1], shift_labels=targets, **kwargs)
        return out

    inner.forward = answer_forward
    setattr(inner, MARK, True)
    return inner


class AnswerLossPlugin(BasePlugin):
    """Axolotl plugin: after the model (and any adapter) is loaded, switch on answer-position logits."""

    def post_model_load(self, cfg, model) -> None:
        inner = enable(model)
        # A line in the training log, so a run shows that the switch took (Axolotl only logs a failed plugin import).
        print(f"answer-position loss: on for {type(inner).__name__} (logits only where labels are trained)", flush=True)
