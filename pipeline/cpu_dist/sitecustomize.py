"""Preflight only: lets `accelerate launch` + DeepSpeed run several processes on a CPU.

The preflight puts this folder on PYTHONPATH of the processes it launches for `--gpus N`
(pipeline/preflight.py); Python imports `sitecustomize` at start-up. Nothing else loads it.

Why it is needed (accelerate 1.13, deepspeed 0.18.9): DeepSpeed's CPU accelerator falls back
to the gloo backend when oneCCL is absent (deepspeed/accelerator/cpu_accelerator.py), so
`deepspeed.comm.init_distributed(dist_backend=None)` does start a 2-process gloo group. But
accelerate's `PartialState._prepare_backend` (accelerate/state.py) names a backend for a
launched process (LOCAL_RANK set) only when it finds an accelerator (CUDA, XPU, NPU...), and
calls it MULTI_CPU only with `cpu=True`, which skips DeepSpeed. With no backend, accelerate
sets `num_processes = 1` ("No backend == no distributed training"), so each rank would train
alone on the whole dataset. Here a launched process without CUDA gets "gloo", the backend
DeepSpeed itself picks on a CPU; the rest of accelerate's path (DeepSpeed init, world size
from torch.distributed, distributed_type DEEPSPEED) runs unchanged.
"""
from __future__ import annotations

import os


def _patch() -> None:
    try:
        import torch
        from accelerate import state
    except ImportError:  # not an environment with accelerate: nothing to do
        return
    original = state.PartialState._prepare_backend

    def _prepare_backend(self, cpu=False, sagemaker_dp=False, backend=None):
        got, kind = original(self, cpu, sagemaker_dp, backend)
        if got is None and not torch.cuda.is_available() and int(os.environ.get("LOCAL_RANK", -1)) != -1:
            got = "gloo"
        return got, kind

    state.PartialState._prepare_backend = _prepare_backend


_patch()
