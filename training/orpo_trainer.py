"""The ORPO stage's trainer: Axolotl's ORPO trainer, tokenized as the scorer reads and with logits
only at the completion positions.

Named from a stage YAML with `rl: orpo`:

    trainer_cls: training.orpo_trainer.AnswerORPOTrainer

Axolotl builds it in place of `AxolotlORPOTrainer` (axolotl/core/builders/rl.py `_get_trainer_cls`),
with the same arguments; everything not below is TRL's ORPO (trl/experimental/orpo/orpo_trainer.py):
loss = NLL(chosen) - alpha * mean(log sigmoid(log odds(chosen) - log odds(rejected))),
alpha = the YAML's `orpo_alpha`.

What differs from TRL (training/README.md, "The ORPO stage", lists these):
- Tokens. TRL tokenizes `prompt + answer` as one string and splits it where the prompt's tokens
  end. Here the prompt is tokenized on its own with BOS (`tokenizer(prompt)`, how the scorer
  tokenizes a context, inference/scoring.py) and each answer on its own, BOS stripped, EOS added
  (`maerak.prompt.response_ids`, how the scorer and Axolotl's alpaca rows tokenize a continuation):
  the pair is trained on exactly the token sequence submit scores.
- The NLL term covers the chosen COMPLETION's tokens (its answer and EOS), as in the ORPO paper;
  TRL 1.9 takes it over every attended token of prompt + chosen.
- The odds are of the quantity submit scores: log p(answer) = the SUM of the answer's token
  log-probabilities WITHOUT the EOS (letters: the letter's one token; options: the option's
  tokens), not TRL's mean over answer + EOS. Scoring softmaxes exactly these sums.
- Saturation: float32 `log_softmax` returns exactly 0.0 once a token leads by ~17 logits, and
  TRL's `log1mexp(0)` is -inf with NaN gradients. `log1mexp` here clamps log p to <= -EPS
  first (p within float32 resolution of 1 is 1 anyway): the loss and gradients stay finite.
- Logits only where a completion token is predicted (transformers' `logits_to_keep`, so the
  model's own head and Gemma's final-logit softcapping run on those rows only): the prompt's
  ~500 positions never go through the 262k-row vocabulary head. Same numbers as the full-logits
  path for the positions kept (tests/test_orpo.py checks the loss against TRL's own formula).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from axolotl.core.trainers.trl import AxolotlORPOTrainer

from maerak.prompt import IGNORE_INDEX, preference_ids

# log p is clamped to <= -EPS before log(1 - p): float32 cannot tell 1 - p below its epsilon from 0.
EPS = torch.finfo(torch.float32).eps


def completion_logps(logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probabilities of `targets` (IGNORE_INDEX where nothing is trained, set to 0)
    and the mask of trained tokens. `logits` [rows, k, vocab], `targets` [rows, k]."""
    mask = targets != IGNORE_INDEX
    safe = torch.where(mask, targets, 0)
    logps = torch.log_softmax(logits.float(), dim=-1).gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return logps * mask, mask


def scored_mask(mask: torch.Tensor) -> torch.Tensor:
    """The trained tokens submit scores: each row's completion without its last token, the EOS
    `preference_ids` appends (letters: the letter's one token; options: the option's tokens)."""
    last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & mask
    return mask & ~last


def pair_forward(model, cat: dict[str, torch.Tensor], n_chosen: int, **kwargs: Any):
    """One forward over TRL's concatenated batch (`concatenated_inputs`: the chosen rows, then the
    rejected ones) with logits only at the positions that predict a completion token. Returns each
    row's scored log-likelihood (the sum over its answer tokens without EOS, as submit scores it),
    the kept logits, the NLL of the chosen completions' tokens (answer and EOS, mean per token),
    and the model's output."""
    labels = cat["concatenated_labels"]
    targets = F.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:]  # the token each position predicts
    keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().flatten()
    outputs = model(cat["concatenated_input_ids"], attention_mask=cat["concatenated_attention_mask"],
                    use_cache=False, logits_to_keep=keep, **kwargs)
    logps, mask = completion_logps(outputs.logits, targets[:, keep])
    per_row = (logps * scored_mask(mask)).sum(-1)
    nll = -logps[:n_chosen].sum() / mask[:n_chosen].sum().clamp(min=1)
    return per_row, outputs.logits, nll, outputs


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x = log p <= 0, TRL's stable form on x clamped to <= -EPS: finite, with
    finite gradients (0 where clamped), also at x == 0.0, where TRL's gives -inf and NaN gradients
    (both branches of its `torch.where` are differentiated)."""
    from trl.experimental.orpo.orpo_trainer import log1mexp as trl_log1mexp

    return trl_log1mexp(x.clamp(max=-EPS))


def log_odds_ratio(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> torch.Tensor:
    """log odds(chosen) - log odds(rejected), odds = p / (1 - p) (TRL's `odds_ratio_loss`, finite)."""
    c, r = chosen_logps.float(), rejected_logps.float()
    return (c - r) - (log1mexp(c) - log1mexp(r))


def orpo_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, nll: torch.Tensor, alpha: float) -> torch.Tensor:
    """TRL's ORPO objective (`odds_ratio_loss`, `get_batch_loss_metrics`):
    NLL - alpha * mean log sigmoid(log odds(chosen) - log odds(rejected)), odds = p / (1 - p)."""
    return nll - alpha * F.logsigmoid(log_odds_ratio(chosen_logps, rejected_logps)).mean()


class AnswerORPOTrainer(AxolotlORPOTrainer):
    """TRL's ORPO with the scorer's tokenization, completion-only NLL and completion-only logits."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # A line in the training log, so a run shows that the trainer Axolotl built is this one.
        print(f"ORPO: {type(self).__name__}, alpha {self.beta}; completion-only logits and NLL", flush=True)

    def tokenize_row(self, feature: dict[str, Any], model=None) -> dict:
        return preference_ids(self.processing_class, feature["prompt"], feature["chosen"], feature["rejected"],
                              self.max_length)

    def odds_ratio_loss(self, policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor):
        """TRL's `odds_ratio_loss` (same returns, same logged metrics) with the finite `log1mexp`."""
        log_odds = log_odds_ratio(policy_chosen_logps, policy_rejected_logps)
        ratio = F.logsigmoid(log_odds)
        device = self.accelerator.device
        chosen_rewards = self.beta * policy_chosen_logps.float().to(device).detach()
        rejected_rewards = self.beta * policy_rejected_logps.float().to(device).detach()
        return self.beta * ratio, chosen_rewards, rejected_rewards, ratio.mean(), log_odds.mean()

    def concatenated_forward(self, model, batch: dict[str, Any]):
        cat = self.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=self.padding_value,
                                       device=self.accelerator.device)
        n = batch["chosen_labels"].shape[0]
        kwargs = {"output_router_logits": True} if self.aux_loss_enabled else {}
        per_row, logits, nll, outputs = pair_forward(model, cat, n, **kwargs)
        out = (per_row[:n], per_row[n:], logits[:n], logits[n:], nll)
        return (*out, outputs.aux_loss) if self.aux_loss_enabled else out
