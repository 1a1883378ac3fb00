"""The scorer a verb asks for: `Scorer` (transformers) or `VllmScorer` (vLLM), one factory.

Both compute one primitive, the log-likelihood of each continuation after a context, for the
`maerak.modes.Request`s of either mode, into the same cache format, so everything after
scoring is backend-blind.
"""
from __future__ import annotations

from pathlib import Path

from inference.scoring import Scorer
from inference.vllm_backend import VllmScorer
from maerak import vllm_engine
from maerak.errors import MaerakError


def make_scorer(model_dir: str | Path, backend: str = "transformers", **kwargs):
    """transformers by default; vLLM (inference/vllm_backend.py) when asked, or with `auto`
    when `import vllm` works. vLLM-only settings (tensor_parallel_size, prefix_caching) are
    dropped for transformers."""
    if backend == "vllm" or (backend == "auto" and vllm_engine.available()):
        if not vllm_engine.available():
            raise MaerakError("--backend vllm: `import vllm` fails in this environment; "
                             "install it with `make setup VLLM=1` and run from .venv-vllm (inference/README.md)")
        return VllmScorer(model_dir, **kwargs)
    for key in VLLM_ONLY:
        kwargs.pop(key, None)
    return Scorer(model_dir, **kwargs)


VLLM_ONLY = ("tensor_parallel_size", "prefix_caching")
