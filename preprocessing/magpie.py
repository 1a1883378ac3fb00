"""Magpie generation: synthetic instruction/response pairs from a local chat model.

As in the Magpie paper, the model gets ONLY the pre-query template (the chat
template's user-turn prefix, e.g. Gemma's `<bos><start_of_turn>user\\n`) and writes
an instruction itself (sampled); the response is then generated (greedy) for the
full chat prompt. Rows are written as ShareGPT `conversations` JSONL, which the
`magpie` source loader reads (sources.yml: magpie_generated, stage 1).

`python -m preprocessing.magpie --profile sample --count 4` writes
outputs/<profile>/magpie/generated.jsonl; prepare runs it when magpie_generate.enabled.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from maerak.files import atomic_write_jsonl
from maerak.fingerprint import model_digest
from preprocessing.config import MagpieGenerate, load_config, resolve

MARK = "\x00MAERAK_QUERY\x00"
# Gemma's template, for tokenizers that carry no chat template (e.g. the tests' tiny model).
FALLBACK_PREFIX = "{bos}<start_of_turn>user\n"
FALLBACK_TURN = "{bos}<start_of_turn>user\n{query}<end_of_turn>\n<start_of_turn>model\n"
END_MARKS = ("<end_of_turn>", "<start_of_turn>", "<eos>")


def pre_query_template(tokenizer) -> str:
    """The chat template rendered up to where the user's text would start."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template([{"role": "user", "content": MARK}], tokenize=False)
        return text[: text.index(MARK)]
    return FALLBACK_PREFIX.format(bos=tokenizer.bos_token or "")


def chat_prompt(tokenizer, query: str) -> str:
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": query}], tokenize=False, add_generation_prompt=True)
    return FALLBACK_TURN.format(bos=tokenizer.bos_token or "", query=query)


def cut(text: str) -> str:
    for mark in END_MARKS:
        text = text.split(mark)[0]
    return text.strip()


def generate(model_path: str | Path, count: int, max_instruction_tokens: int = 48, max_response_tokens: int = 96,
             temperature: float = 1.0, seed: int = 42, progress: bool = True) -> list[dict]:
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_path))
    model = AutoModelForCausalLM.from_pretrained(str(model_path), dtype=torch.float32).eval()
    prefix = pre_query_template(tok)
    prefix_ids = tok(prefix, return_tensors="pt", add_special_tokens=False)["input_ids"]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    rows = []
    for n in tqdm(range(count), desc="magpie", unit="pair", disable=not progress):
        torch.manual_seed(seed + n)
        with torch.no_grad():
            out = model.generate(prefix_ids, max_new_tokens=max_instruction_tokens, do_sample=True,
                                 temperature=temperature, top_p=1.0, pad_token_id=pad)
        query = cut(tok.decode(out[0, prefix_ids.shape[1]:], skip_special_tokens=False).replace(tok.bos_token or MARK, ""))
        response = ""
        if query:
            enc = tok(chat_prompt(tok, query), return_tensors="pt", add_special_tokens=False)
            with torch.no_grad():
                out = model.generate(**enc, max_new_tokens=max_response_tokens, do_sample=False, pad_token_id=pad)
            response = cut(tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=False).replace(tok.bos_token or MARK, ""))
        rows.append({
            "conversations": [{"from": "human", "value": query}, {"from": "gpt", "value": response}],
            "model": Path(str(model_path)).name,
            "seed": seed + n,
        })
    return rows


def run(model_path: str | Path, out_path: Path, cfg: MagpieGenerate, progress: bool = True) -> dict:
    """Generate unless out_path already holds rows made with the same settings."""
    meta_path = out_path.with_suffix(".meta.json")
    settings = {k: getattr(cfg, k) for k in ("count", "max_instruction_tokens", "max_response_tokens", "temperature", "seed")}
    settings["model"] = str(model_path)
    if Path(str(model_path)).is_dir():  # the generator by content (maerak/fingerprint.py), not by its folder's name
        settings["model_sha256"] = model_digest(model_path)
    if out_path.exists() and meta_path.exists() and json.loads(meta_path.read_text(encoding="utf-8")) == settings:
        return {"generated": 0, "reused": str(out_path)}
    start = time.perf_counter()
    rows = generate(model_path, cfg.count, cfg.max_instruction_tokens, cfg.max_response_tokens,
                    cfg.temperature, cfg.seed, progress)
    atomic_write_jsonl(out_path, rows)
    meta_path.write_text(json.dumps(settings, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    return {"generated": len(rows), "seconds": round(time.perf_counter() - start, 2), "file": str(out_path)}


def main(argv: list[str] | None = None) -> int:
    from maerak.profiles import resolve_profile

    parser = argparse.ArgumentParser(prog="python -m preprocessing.magpie", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile")
    parser.add_argument("--model", help="chat model directory (default: magpie_generate.model)")
    parser.add_argument("--count", type=int)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    profile = resolve_profile(args.profile)[0]
    profile.apply_env()
    cfg = load_config(profile)
    mcfg = cfg.magpie_generate
    if args.count:
        mcfg = dataclasses.replace(mcfg, count=args.count)
    out = args.out or profile.out / "magpie" / "generated.jsonl"
    print(json.dumps(run(args.model or resolve(profile, mcfg.model), out, mcfg), ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
