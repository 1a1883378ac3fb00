"""How many optimizer updates a bf16 weight loses at the recipe's learning rate, and what keeps them.

Stage 2 of the competition recipe trains gemma-2-9b-it's weights in bf16 (`bf16: true` loads the
model in bf16) with 8-bit AdamW at lr 2e-5. Adam's step is about lr per element, and bf16 keeps
8 significant bits: a step smaller than half the spacing between bf16 neighbours of a weight
(|w| >= 2^-7 for a 2e-5 step) rounds back to the same weight. This bench measures that on the
embedded gemma-3-270m (the same bf16 format; its weights are of gemma-2's magnitudes):

1. one forward/backward of the model (fp32 compute, bf16 weights) on real stage-2-style rows (data/sample) gives the
   gradients; the weights measured are every linear weight of a few decoder layers (`--layers`),
   concatenated into one flat tensor per optimizer (Adam is element-wise; the 8-bit states are
   quantized in blocks of the flattened tensor either way), so torchao compiles one shape;
2. each optimizer takes `--steps` steps at a constant lr 2e-5 (the peak of the recipe's schedule;
   warmup is smaller still), weight decay 0.05, with that gradient, from the same bf16 weights:
   - fp32 master weights + torch AdamW: the reference (the update as intended);
   - bnb AdamW8bit on bf16 weights: the recipe (`adamw_bnb_8bit`; bitsandbytes 0.50 steps on CPU);
   - torchao AdamW8bit on bf16 weights, rounding to nearest and with bf16 stochastic rounding
     (`optimizer: adamw_torch_8bit` + `optim_args: {bf16_stochastic_round: true}` in Axolotl);
3. per optimizer: the share of weights that one step left unchanged, the share still unchanged
   after all steps, the error of the total change against the reference, |Δ - Δref| / |Δref|, and
   the share of the intended update kept, <Δ, Δref> / <Δref, Δref> (the projection of the change
   that reached the weights on the intended one: 1 = all of it on average, 0 = none).

`--lr 5e-6` is stage 3's (ORPO) learning rate: its form, `adamw_torch_8bit` with bf16 stochastic
rounding (axolotl_configs/competition/stage3_orpo.yml), is the torchao row.

Usage: .venv/bin/python bench/bf16_updates.py [--model models/gemma-3-270m] [--layers 0,8,17] [--steps 10] [--lr 2e-5]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LR, WD, BETAS, EPS = 2e-5, 0.05, (0.9, 0.999), 1e-8
GEMMA2_9B_PARAMS = 9_241_705_984  # google/gemma-2-9b-it (its model card / config arithmetic)


def rows(n: int) -> list[str]:
    """n stage-2 training texts (the alpaca prompt + the answer letter) from the sample's train items."""
    from maerak.prompt import answer_letter, render_prompt
    from maerak.schema import load_items

    return [render_prompt(it) + answer_letter(it) for it in load_items(ROOT / "data" / "sample" / "train.json")[0][:n]]


def gradients(model_dir: Path, layers: list[int], n_rows: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(bf16 weights, fp32 gradient) of the chosen layers' linear weights, flattened; all weights' count."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    # The stored weights are bf16; the gradient is computed in fp32 (CPU bf16 matmuls in backward
    # take the slow reference path). What is measured is the update's rounding, not the gradient.
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    chosen = [m.weight for i in layers for m in model.model.layers[i].modules() if isinstance(m, torch.nn.Linear)]
    for p in model.parameters():
        p.requires_grad_(False)
    for w in chosen:
        w.requires_grad_(True)
    batch = tok(rows(n_rows), return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model(**batch, labels=labels).loss.backward()
    every = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if p.dim() == 2 and "embed" not in n])
    big = float((every.float().abs() >= 2 ** -7).float().mean())
    w = torch.cat([p.detach().flatten() for p in chosen]).to(torch.bfloat16)  # exact: the checkpoint is bf16
    g = torch.cat([p.grad.flatten().float() for p in chosen])
    return w, g, big


def kept(d: torch.Tensor, d_ref: torch.Tensor) -> float:
    """The share of the intended change d_ref that the change d carries: its projection on d_ref."""
    return float((d.double() * d_ref.double()).sum() / (d_ref.double() ** 2).sum())


def run(make, w0: torch.Tensor, g: torch.Tensor, dtype: torch.dtype, steps: int) -> tuple[torch.Tensor, float, float]:
    """Final weights (fp32 copy), share unchanged after step 1, seconds per step after the first."""
    p = torch.nn.Parameter(w0.clone().to(dtype))
    opt = make([p])
    start = p.detach().clone()
    unchanged_1, t = 0.0, 0.0
    for k in range(steps):
        p.grad = g.to(dtype)
        t0 = time.perf_counter()
        opt.step()
        if k:
            t += time.perf_counter() - t0
        if k == 0:
            unchanged_1 = float((p.detach() == start).float().mean())
    return p.detach().float(), unchanged_1, t / max(steps - 1, 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "gemma-3-270m")
    ap.add_argument("--layers", default="0,8,17", help="decoder layers whose linear weights are measured")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rows", type=int, default=2)
    ap.add_argument("--lr", type=float, default=LR, help="2e-5: stage 2 (the recipe); 5e-6: stage 3 (ORPO)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    w0, g, big_all = gradients(args.model, [int(x) for x in args.layers.split(",")], args.rows)
    print(f"{w0.numel():,} weights (linear layers {args.layers}); median |w| {w0.float().abs().median():.4f}; "
          f"|w| >= 2^-7 (a 2e-5 step rounds away): {(w0.float().abs() >= 2 ** -7).float().mean():.1%} here, "
          f"lr {args.lr:g}, "
          f"{big_all:.1%} of all the model's 2-D weights but the embedding; gradients in {time.perf_counter() - t0:.0f} s")

    import bitsandbytes as bnb
    from torchao.optim import AdamW8bit

    kw = dict(lr=args.lr, betas=BETAS, eps=EPS, weight_decay=WD)
    ref, _, _ = run(lambda ps: torch.optim.AdamW(ps, **kw), w0, g, torch.float32, args.steps)
    d_ref = ref - w0.float()
    variants = {
        "bnb AdamW8bit, bf16 weights (the recipe)": (lambda ps: bnb.optim.AdamW8bit(ps, **kw), torch.bfloat16),
        "torch AdamW, bf16 weights": (lambda ps: torch.optim.AdamW(ps, **kw), torch.bfloat16),
        "torchao AdamW8bit, bf16 weights": (lambda ps: AdamW8bit(ps, **kw), torch.bfloat16),
        "torchao AdamW8bit, bf16 stochastic rounding": (lambda ps: AdamW8bit(ps, bf16_stochastic_round=True, **kw),
                                                        torch.bfloat16),
        "fp32 master weights, torch AdamW (reference)": (lambda ps: torch.optim.AdamW(ps, **kw), torch.float32),
    }
    results = {}
    print(f"\n{'optimizer':<46} {'unchanged after 1 step':>22} {f'after {args.steps}':>10} {'|Δ-Δref|/|Δref|':>16} {'kept':>8}")
    for name, (make, dtype) in variants.items():
        final, one, per_step = run(make, w0, g, dtype, args.steps)
        d = final - w0.float()
        r = {"unchanged_after_1": one, f"unchanged_after_{args.steps}": float((d == 0).float().mean()),
             "rel_error": float((d - d_ref).norm() / d_ref.norm()), "kept": kept(d, d_ref),
             "seconds_per_step": round(per_step, 3)}
        results[name] = r
        print(f"{name:<46} {one:>22.1%} {r[f'unchanged_after_{args.steps}']:>10.1%} {r['rel_error']:>16.3f} {r['kept']:>8.1%}")
    gb = GEMMA2_9B_PARAMS / 1e9
    memory = {"fp32 master weights": f"+{4 * gb:.1f} GB (4 B/param on gemma-2-9b)",
              "Kahan summation (optimi, not installed)": f"+{2 * gb:.1f} GB (a bf16 compensation buffer, 2 B/param)",
              "bf16 stochastic rounding": "+0 GB (torchao AdamW8bit states: 2 B/param, as bnb's)"}
    print("\nextra GPU memory for stage 2 of gemma-2-9b:")
    for k, v in memory.items():
        print(f"  {k}: {v}")
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"lr": args.lr, "weights": w0.numel(), "big_share_all": big_all, "results": results,
                                         "memory": memory}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
