"""ORPO step vs SFT step on the embedded model: what one preference pair costs in SFT rows.

Official-shape synthetic items (bench/official_shape.py: ~500-token conversations) in options mode,
as official-cpu trains them; fp32; each (round, mode) in a fresh child process, modes alternating,
the best round of each counting. A step is forward + backward + AdamW (lr 0: every step sees the
same weights).

  sft        official-cpu's stage 2: --rows option rows (Axolotl alpaca tokenization) with the
             answer-position plugin (training/answer_loss.py)
  orpo       official-cpu's stage 3: --pairs preference pairs (maerak.modes preference_rows, 2 per
             item), training/orpo_trainer.py's forward (logits only at completion positions) and loss
  orpo-full  the same pairs and loss with logits at every position (TRL's own forward): what the
             completion-only logits save

Prints seconds per step, per SFT row and per ORPO pair, and the pair/row ratio that sizes
official-cpu's stage 3 (training/README.md, "The ORPO stage").

  .venv/bin/python bench/orpo_step.py [--model DIR] [--rows 4] [--pairs 2] [--steps 3] [--rounds 2]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("sft", "orpo", "orpo-full")


def pair_batches(tokenizer, n_pairs: int, count: int) -> list[dict]:
    """`count` TRL-collated batches of `n_pairs` options-mode pairs of official-shape items."""
    from trl.experimental.utils import DPODataCollatorWithPadding

    from bench.official_shape import synthetic_items
    from maerak.modes import OPTIONS_MODE
    from maerak.prompt import preference_ids

    need = n_pairs * count
    rows = OPTIONS_MODE.preference_rows(synthetic_items(tokenizer, -(-need // 6), 3))[:need]
    feats = [preference_ids(tokenizer, r.row["prompt"], r.row["chosen"], r.row["rejected"]) for r in rows]
    collate = DPODataCollatorWithPadding(pad_token_id=tokenizer.pad_token_id)
    return [collate(feats[i:i + n_pairs]) for i in range(0, need, n_pairs)]


def orpo_step_loss(model, batch: dict, pad_id: int, full: bool):
    import torch.nn.functional as F
    from trl.experimental.orpo.orpo_trainer import ORPOTrainer

    from training.orpo_trainer import completion_logps, orpo_loss, pair_forward

    cat = ORPOTrainer.concatenated_inputs(batch, is_encoder_decoder=False, padding_value=pad_id, device="cpu")
    n = batch["chosen_labels"].shape[0]
    if not full:
        per_row, _, nll, _ = pair_forward(model, cat, n)
    else:  # every position through the head, then the same completion-only numbers
        logits = model(cat["concatenated_input_ids"], attention_mask=cat["concatenated_attention_mask"], use_cache=False).logits
        targets = F.pad(cat["concatenated_labels"], (0, 1), value=-100)[:, 1:]
        logps, mask = completion_logps(logits, targets)
        per_row = logps.sum(-1) / mask.sum(-1)
        nll = -logps[:n].sum() / mask[:n].sum()
    return orpo_loss(per_row[:n], per_row[n:], nll, 0.1)


def child(args) -> dict:
    import torch

    from bench.train_step import collate, load_for_training, tokenized_rows
    from training.answer_loss import enable

    tokenizer, model = load_for_training(args.model, args.threads)
    if args.mode == "sft":

        enable(model)
        rows = tokenized_rows(None, tokenizer, args.rows * (args.steps + 1), 1024)
        batches = [collate(rows[i:i + args.rows], tokenizer.pad_token_id) for i in range(0, len(rows), args.rows)]

        def loss_of(batch):
            return model(**batch).loss
    else:
        batches = pair_batches(tokenizer, args.pairs, args.steps + 1)

        def loss_of(batch):
            return orpo_step_loss(model, batch, tokenizer.pad_token_id, args.mode == "orpo-full")
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0)
    times, losses = [], []
    for batch in batches:
        t0 = time.perf_counter()
        loss = loss_of(batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(float(loss))
    step = sum(times[1:]) / args.steps  # the first batch warms up
    units = args.rows if args.mode == "sft" else args.pairs
    return {"mode": args.mode, "step_s": step, "per_unit_s": step / units, "losses": losses}


def run_child(args, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--model", str(args.model), "--rows", str(args.rows),
           "--pairs", str(args.pairs), "--steps", str(args.steps)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"bench child ({mode}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "gemma-3-270m")
    p.add_argument("--rows", type=int, default=4, help="SFT rows per step (official-cpu stage 2: micro_batch_size 4)")
    p.add_argument("--pairs", type=int, default=2, help="ORPO pairs per step (official-cpu stage 3: micro_batch_size 2)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round (after one warm-up step)")
    p.add_argument("--rounds", type=int, default=2, help="rounds of every mode; the best of each counts")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--child", choices=MODES, dest="mode", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(child(args)))
        return 0
    if not (args.model / "config.json").exists():
        print(f"no checkpoint at {args.model}: run `./run.sh model` first or pass --model DIR", file=sys.stderr)
        return 1
    results: dict[str, list[dict]] = {m: [] for m in args.modes}
    for r in range(args.rounds):
        for mode in args.modes:
            res = run_child(args, mode)
            results[mode].append(res)
            print(f"round {r + 1} {mode:9s} step {res['step_s']:.2f} s  loss {res['losses'][1]:.6f}", flush=True)
    best = {m: min(results[m], key=lambda x: x["step_s"]) for m in args.modes}
    for m in args.modes:
        unit = "row" if m == "sft" else "pair"
        print(f"{m:9s} {best[m]['step_s']:.2f} s/step  {best[m]['per_unit_s']:.2f} s/{unit}")
    summary: dict[str, float] = {}
    if "sft" in best and "orpo" in best:
        summary["pair_over_row"] = best["orpo"]["per_unit_s"] / best["sft"]["per_unit_s"]
        print(f"one ORPO pair = {summary['pair_over_row']:.2f} SFT rows (per-pair / per-row seconds)")
    if "orpo" in best and "orpo-full" in best:
        summary["full_over_completion"] = best["orpo-full"]["step_s"] / best["orpo"]["step_s"]
        same = all(abs(a - b) <= 1e-4 * abs(a) for a, b in zip(best["orpo"]["losses"], best["orpo-full"]["losses"]))
        print(f"completion-only logits: {summary['full_over_completion']:.2f}x faster than every position; same losses: {same}")
    if args.json:
        args.json.write_text(json.dumps({"best": best, "rounds": results, **summary}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
