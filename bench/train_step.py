"""Training-step speed: standard causal-LM loss vs answer-position logits (training/answer_loss.py),
and float32 vs bfloat16 autocast.

The embedded model, real stage-2 rows (`./run.sh prepare --profile sample` writes
outputs/sample/prepared/stage2.jsonl) tokenized by Axolotl's alpaca strategy as training
does (train_on_inputs: false), fp32, batches of --batch-size rows padded on the right.
Each (round, mode) runs in a fresh child process, the modes alternating, so that peak RSS
(the kernel's mark, reset before each forward and read after its backward) is per mode and load drift hits both; the best
round of each mode counts.

  standard  the model's own forward: logits at every position, loss on the trained ones
  answer    the same model with answer-position logits switched on
  autocast  answer, with forward and backward under torch.autocast("cpu", bfloat16) and the
            weights, gradients and AdamW states in float32 (what `bf16: true` plus
            training.master_weights.Fp32MasterWeightsPlugin gives in Axolotl)

A step is forward + backward (fwd+bwd) and then AdamW's update (step); the ratios printed are
standard / answer (target: fwd+bwd >= 2.3 on the 2-core development machine) and answer /
autocast (target: step >= 1.6 on CPUs with AVX-512-BF16/AMX). --official-shape trains on
options-mode rows of official-shape synthetic items (bench/official_shape.py: ~500-token
conversations) in batches of 4, as official-cpu's stage 2 does, instead of --rows.

  .venv/bin/python bench/train_step.py [--model DIR] [--rows FILE | --official-shape] [--batch-size N] [--steps N] [--rounds N]
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

MODES = ("standard", "answer", "autocast")


def tokenized_rows(rows_file: Path | None, tokenizer, count: int, sequence_len: int) -> list[dict]:
    """The first `count` rows (of `rows_file`, or official-shape options-mode rows when None) as
    Axolotl's alpaca strategy tokenizes them for training."""
    from axolotl.prompt_tokenizers import AlpacaPromptTokenizingStrategy
    from axolotl.prompters import AlpacaPrompter

    strategy = AlpacaPromptTokenizingStrategy(AlpacaPrompter("instruct"), tokenizer, False, sequence_len)
    if rows_file is None:
        from bench.official_shape import synthetic_items
        from maerak.prompt import option_row

        rows = [option_row(it) for it in synthetic_items(tokenizer, -(-count // 3), 3)][:count]
    else:
        with open(rows_file, encoding="utf-8") as fh:
            rows = [json.loads(line) for line, _ in zip(fh, range(count))]
    if len(rows) < count:
        raise SystemExit(f"{rows_file}: {len(rows)} rows, the bench needs {count}")
    return [strategy.tokenize_prompt(row) for row in rows]


def collate(rows: list[dict], pad_id: int):
    """Right-padded input_ids / attention_mask / labels (-100 on padding), as Axolotl's collator pads."""
    import torch

    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss() -> None:
    """Reset the kernel's peak-RSS mark (Linux: clear_refs 5), so a peak read later covers only what came after."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_kib() -> int:
    return status_kib("VmHWM")


def load_for_training(model_dir: Path, threads: int | None):
    """The embedded model as the training-step benches use it: fp32, sdpa, train mode, seed 0."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.train()
    return tokenizer, model


def child(args) -> dict:
    """One mode, one round: load, one warm-up step, then time --steps steps."""
    import torch

    from training.answer_loss import enable

    tokenizer, model = load_for_training(args.model, args.threads)
    if args.mode != "standard":
        enable(model)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.mode == "autocast")
    rows = tokenized_rows(None if args.official_shape else args.rows, tokenizer, args.batch_size * (args.steps + 1), args.sequence_len)
    batches = [collate(rows[i:i + args.batch_size], tokenizer.pad_token_id) for i in range(0, len(rows), args.batch_size)]
    # lr 0: every step sees the same weights. fused: what `optimizer: adamw_torch_fused` gives (one
    # kernel over all float32 tensors); loop: plain adamw_torch on CPU (torch has no CPU foreach kernels).
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.0, fused=args.optimizer == "fused",
                                  foreach=False if args.optimizer == "loop" else None)
    base_rss = status_kib("VmRSS")
    fwd_bwd, opt, losses, peaks = [], [], [], []
    for batch in batches:
        reset_peak_rss()  # the peak of forward + backward alone (AdamW's own temporaries are the same in both modes)
        t0 = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        t1 = time.perf_counter()
        peaks.append(peak_rss_kib())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        t2 = time.perf_counter()
        fwd_bwd.append(t1 - t0)
        opt.append(t2 - t1)
        losses.append(float(loss))
    timed = slice(1, None)  # the first batch warms up
    tokens = sum(int(b["attention_mask"].sum()) for b in batches[timed])
    return {
        "mode": args.mode,
        "fwd_bwd_s": sum(fwd_bwd[timed]) / args.steps,
        "step_s": (sum(fwd_bwd[timed]) + sum(opt[timed])) / args.steps,
        "tokens_per_step": tokens / args.steps,
        "losses": losses,
        "peak_rss_gib": max(peaks) / 2**20,
        "loaded_rss_gib": base_rss / 2**20,
    }


def run_child(args, mode: str) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, "--model", str(args.model), "--rows", str(args.rows),
           "--batch-size", str(args.batch_size), "--steps", str(args.steps), "--sequence-len", str(args.sequence_len)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.official_shape:
        cmd += ["--official-shape"]
    cmd += ["--optimizer", args.optimizer]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"bench child ({mode}) failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=ROOT / "models" / "gemma-3-270m")
    p.add_argument("--rows", type=Path, default=ROOT / "outputs" / "sample" / "prepared" / "stage2.jsonl")
    p.add_argument("--batch-size", type=int, default=2, help="rows per step (sample stage 2: micro_batch_size 2)")
    p.add_argument("--steps", type=int, default=3, help="timed steps per round (after one warm-up step)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (standard, answer); the best of each counts")
    p.add_argument("--sequence-len", type=int, default=768, help="as in axolotl_configs/sample/stage2_full.yml")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.add_argument("--official-shape", action="store_true",
                   help="options-mode rows of official-shape synthetic items instead of --rows")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                   help="modes to time (e.g. `answer autocast` for the bf16 line alone)")
    p.add_argument("--optimizer", choices=("fused", "loop"), default="fused",
                   help="AdamW kernel: fused (official-cpu's adamw_torch_fused) or loop (plain adamw_torch)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--child", choices=MODES, dest="mode", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.mode:
        print(json.dumps(child(args)))
        return 0
    if not (args.model / "config.json").exists():
        print(f"no checkpoint at {args.model}: run `./run.sh model` first or pass --model DIR", file=sys.stderr)
        return 1
    if not args.official_shape and not args.rows.is_file():
        print(f"{args.rows}: no stage-2 rows; run `./run.sh prepare --profile sample` first", file=sys.stderr)
        return 1

    from maerak.cpu_dtype import describe

    print(describe(), flush=True)
    modes = [m for m in MODES if m in args.modes]
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for r in range(args.rounds):
        for mode in modes:
            res = run_child(args, mode)
            results[mode].append(res)
            print(f"round {r + 1} {mode:8s} fwd+bwd {res['fwd_bwd_s']:.2f} s  step {res['step_s']:.2f} s  "
                  f"loss {res['losses'][1]:.6f}", flush=True)
    best = {m: min(results[m], key=lambda x: x["fwd_bwd_s"]) for m in modes}
    for m in modes:
        b = best[m]
        print(f"{m:8s} fwd+bwd {b['fwd_bwd_s']:.2f} s/step  step (with AdamW) {b['step_s']:.2f} s  "
              f"{b['tokens_per_step'] / b['step_s']:.0f} tokens/s  peak RSS in fwd+bwd {max(x['peak_rss_gib'] for x in results[m]):.2f} GiB "
              f"(model loaded: {b['loaded_rss_gib']:.2f})")
    ratio = step_ratio = bf16_ratio = None
    if {"standard", "answer"} <= set(modes):
        same = all(abs(a - b) <= 1e-5 * abs(a) for a, b in zip(best["standard"]["losses"], best["answer"]["losses"]))
        ratio = best["standard"]["fwd_bwd_s"] / best["answer"]["fwd_bwd_s"]
        step_ratio = best["standard"]["step_s"] / best["answer"]["step_s"]
        print(f"ratio standard/answer: fwd+bwd {ratio:.2f}x (target >= 2.3), step with AdamW {step_ratio:.2f}x; "
              f"same losses: {same}; {args.batch_size} rows x {best['answer']['tokens_per_step'] / args.batch_size:.0f} tokens per step")
    if {"answer", "autocast"} <= set(modes):
        bf16_ratio = best["answer"]["step_s"] / best["autocast"]["step_s"]
        loss_gap = max(abs(a - b) / abs(a) for a, b in zip(best["answer"]["losses"], best["autocast"]["losses"]))
        opt_f = best["answer"]["step_s"] - best["answer"]["fwd_bwd_s"]
        opt_b = best["autocast"]["step_s"] - best["autocast"]["fwd_bwd_s"]
        print(f"AdamW ({args.optimizer}) part of the step: float32 {opt_f:.2f} s, under autocast {opt_b:.2f} s "
              f"(float32 masters in both: these should match)")
        print(f"ratio answer/autocast (float32 / bfloat16 autocast): step with AdamW {bf16_ratio:.2f}x (target >= 1.6: "
              f"{'met' if bf16_ratio >= 1.6 else 'NOT met'}), fwd+bwd "
              f"{best['answer']['fwd_bwd_s'] / best['autocast']['fwd_bwd_s']:.2f}x; largest relative loss difference {loss_gap:.1e}")
    if args.json:
        args.json.write_text(json.dumps({"batch_size": args.batch_size, "official_shape": args.official_shape,
                                         "optimizer": args.optimizer, "best": best, "rounds": results, "ratio_fwd_bwd": ratio,
                                         "ratio_step": step_ratio, "ratio_bf16_step": bf16_ratio}, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
