"""Knowledge distillation: a teacher model writes a short Korean rationale for the
correct answer of each training item; prepare adds `alpaca_row(item, order,
rationale=...)` rows.

The teacher is any local causal LM directory (transformers; vLLM, on CPU or GPU, when
`import vllm` works or `distill.backend: vllm`). Answers are cached in a JSONL file keyed by item id + teacher +
prompt hash, so a rerun asks the teacher nothing it has already answered. The cache is
appended batch by batch (an interrupted run keeps what it finished; a torn last line
is ignored).

Standalone: `python -m preprocessing.distill --profile sample [--limit N]` fills the
cache (and prints timing) without writing training files.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from maerak.errors import ConfigError, MaerakError
from maerak.files import append_jsonl, read_keyed_jsonl
from maerak.prompt import render_input
from maerak.schema import Item
from preprocessing.config import load_config, resolve

PROMPT = (
    "다음 대화와 질문을 읽고, 정답 지문이 왜 올바른지 한두 문장의 한국어로 설명하세요. "
    "기호(A, B, C)는 쓰지 말고 대화 내용을 근거로 드세요.\n\n{body}\n\n정답: {answer}\n근거:"
)


class Teacher(Protocol):
    name: str

    def generate(self, prompts: Sequence[str]) -> list[str]: ...


def teacher_prompt(item: Item) -> str:
    body = render_input(item)
    answer = item.options[item.label_index]
    return PROMPT.format(body=body, answer=answer)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def teacher_id(path: str | Path) -> str:
    """A teacher by content: its folder's name and the digest of its files (maerak/fingerprint.py), so
    a teacher replaced in place does not reuse the old one's rationales; a hub id by name."""
    from maerak.fingerprint import model_digest

    path = Path(str(path))
    return f"{path.name}@{model_digest(path)[:16]}" if path.is_dir() else str(path)


def cache_key(item_id: str, teacher: str, prompt: str) -> str:
    return sha(f"{item_id}\0{teacher}\0{sha(prompt)}")[:32]


def tidy(text: str, max_chars: int = 300) -> str:
    """Keep the first paragraph, at most two sentences and max_chars; no leading label."""
    text = text.strip()
    text = re.sub(r"^(근거|설명|정답)\s*[:：]\s*", "", text)
    text = text.split("\n\n")[0].replace("\n", " ").strip()
    sentences = re.findall(r".+?(?:[.!?。](?=\s|$)|$)", text)
    text = " ".join(s.strip() for s in sentences[:2] if s.strip())
    return text[:max_chars].strip()


def read_cache(path: Path) -> dict[str, dict]:
    return read_keyed_jsonl(path)


def distill(items: Sequence[Item], teacher: Teacher, cache_path: Path, batch_size: int = 4,
            max_chars: int = 300, progress: bool = True) -> tuple[dict[str, str], dict]:
    """Rationale per item id (raw teacher text tidied; '' when the teacher gave nothing)."""
    from tqdm import tqdm

    cache = read_cache(cache_path)
    prompts = {it.id: teacher_prompt(it) for it in items}
    keys = {it.id: cache_key(it.id, teacher.name, prompts[it.id]) for it in items}
    todo = [it for it in items if keys[it.id] not in cache]
    stats = {"items": len(items), "cached": len(items) - len(todo), "generated": 0, "teacher_calls": 0, "seconds": 0.0}
    start = time.perf_counter()
    if todo:
        with tqdm(total=len(todo), desc="distill", unit="item", disable=not progress) as bar:
            for lo in range(0, len(todo), batch_size):
                batch = todo[lo : lo + batch_size]
                outputs = teacher.generate([prompts[it.id] for it in batch])
                stats["teacher_calls"] += 1
                if len(outputs) != len(batch):
                    raise MaerakError(f"teacher {teacher.name} returned {len(outputs)} outputs for {len(batch)} prompts")
                rows = [{"key": keys[it.id], "item_id": it.id, "teacher": teacher.name, "prompt_sha256": sha(prompts[it.id]), "text": out}
                        for it, out in zip(batch, outputs)]
                cache.update((row["key"], row) for row in rows)
                append_jsonl(cache_path, rows)  # each batch is durable before the next starts
                stats["generated"] += len(batch)
                bar.update(len(batch))
    stats["seconds"] = round(time.perf_counter() - start, 2)
    return {it.id: tidy(cache[keys[it.id]]["text"], max_chars) for it in items}, stats


# --- real teachers -------------------------------------------------------------------------------

class TransformersTeacher:
    """Greedy decoding with transformers on CPU or GPU; chat template when the tokenizer has one."""

    def __init__(self, path: str | Path, max_new_tokens: int = 64, dtype: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.path = str(path)
        self.max_new_tokens = max_new_tokens
        self.name = f"{teacher_id(self.path)}|transformers|greedy|{max_new_tokens}"
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device == "cuda" else torch.float32)
        self.model = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch_dtype).to(device).eval()
        self.device = device

    def _format(self, prompt: str) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        return prompt

    def generate(self, prompts: Sequence[str]) -> list[str]:
        import torch

        texts = [self._format(p) for p in prompts]
        add_special = not getattr(self.tokenizer, "chat_template", None)
        enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=add_special).to(self.device)
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        return [self.tokenizer.decode(row, skip_special_tokens=True) for row in new]


class VLLMTeacher:
    """Greedy chat generation through vLLM (maerak/vllm_engine.py), CPU or GPU. The name
    differs from the transformers teacher's, so the two never share cache rows."""

    def __init__(self, path: str | Path, max_new_tokens: int = 64, tensor_parallel_size: int = 1, **engine):
        from maerak.vllm_engine import VllmGenerator

        self.name = f"{teacher_id(path)}|vllm|greedy|{max_new_tokens}"
        self.engine = VllmGenerator(path, max_new_tokens, tensor_parallel_size=tensor_parallel_size, **engine)

    def generate(self, prompts: Sequence[str]) -> list[str]:
        return self.engine.generate(prompts)


def load_teacher(path: str | Path, max_new_tokens: int = 64, backend: str = "auto", tensor_parallel_size: int = 1,
                 **engine) -> Teacher:
    """transformers, or vLLM when asked (`backend: vllm`) or with `auto` when `import vllm` works
    (vLLM runs in .venv-vllm, `make setup VLLM=1`)."""
    if not Path(path).exists():
        raise ConfigError(f"distill teacher {path}: no such model directory (distill.teacher: a local model you bring; unset it to prepare without rationale rows)")
    from maerak import vllm_engine

    if backend not in ("auto", "transformers", "vllm"):
        raise ConfigError(f"distill backend {backend!r}: expected auto, transformers or vllm")
    if backend == "vllm" or (backend == "auto" and vllm_engine.available()):
        if not vllm_engine.available():
            raise MaerakError("distill backend vllm: `import vllm` fails here; run from .venv-vllm (make setup VLLM=1)")
        return VLLMTeacher(path, max_new_tokens, tensor_parallel_size, **engine)
    return TransformersTeacher(path, max_new_tokens)


def main(argv: list[str] | None = None) -> int:
    from maerak.profiles import resolve_profile
    from maerak.schema import load_items

    parser = argparse.ArgumentParser(prog="python -m preprocessing.distill", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile")
    parser.add_argument("--teacher", help="model directory (default: distill.teacher in sources.yml)")
    parser.add_argument("--limit", type=int, help="only the first N train items (timing)")
    args = parser.parse_args(argv)
    profile = resolve_profile(args.profile)[0]
    profile.apply_env()
    cfg = load_config(profile)
    dcfg = cfg.distill
    if not (args.teacher or dcfg.teacher):
        raise ConfigError(f"{cfg.path}: distill.teacher: not set; give --teacher or set it to a local model directory")
    items, _ = load_items(profile.split_file("train"), require_labels=True)
    items = items[: args.limit] if args.limit else items
    teacher = load_teacher(args.teacher or resolve(profile, dcfg.teacher), dcfg.max_new_tokens, dcfg.backend, **profile.vllm)
    rationales, stats = distill(items, teacher, profile.out / "cache" / "distill.jsonl", dcfg.batch_size, dcfg.max_chars)
    print(json.dumps(stats, ensure_ascii=False))
    for iid in list(rationales)[:3]:
        print(f"{iid}: {rationales[iid]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
