"""float32 master weights under bfloat16 autocast, for the CPU profiles.

`bf16: true` in an Axolotl config does two things (axolotl/utils/config/__init__.py sets
`torch_dtype = bfloat16`, which the model is loaded in; axolotl/core/builders/base.py passes
`bf16=True` to the Trainer, whose accelerate runs forward and backward under
`torch.autocast(device, bfloat16)`). The first makes the weights, gradients and AdamW states
bf16: at the CPU profiles' learning rates most single updates to a bf16 weight round to no change.
This plugin keeps the second and undoes the first: after Axolotl has loaded the model, its
floating-point parameters and buffers go back to float32, so autocast computes the matmuls in
bf16 (AVX-512-BF16/AMX on the development CPU) while the optimizer updates float32 weights, and
the checkpoint is saved in float32. Without a GPU it also passes `use_cpu=True` to the Trainer's
arguments (transformers refuses `bf16` on a machine without a bf16 GPU unless `use_cpu` is set,
training_args.py `_validate_args`; Axolotl has no config key for it, but plugins may add
training arguments, axolotl/core/builders/causal.py and rl.py).

Switched on from a stage YAML (with `bf16: true`, or `bf16: auto`: the launcher then sets bf16 from
the CPU measurement of maerak/cpu_dtype.py; with bf16 off the plugin has nothing to do):

    plugins:
      - training.master_weights.Fp32MasterWeightsPlugin
"""
from __future__ import annotations

import torch
from axolotl.integrations.base import BasePlugin


def to_float32(model: torch.nn.Module) -> int:
    """Cast every floating-point parameter and buffer to float32 in place; returns how many were not."""
    changed = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            tensor.data = tensor.data.float()
            changed += 1
    return changed


class Fp32MasterWeightsPlugin(BasePlugin):
    """Axolotl plugin: float32 weights under the Trainer's bf16 autocast (module docstring)."""

    def get_training_args(self, cfg) -> dict:
        return {} if torch.cuda.is_available() else {"use_cpu": True}

    def post_model_load(self, cfg, model) -> None:
        if cfg.load_in_4bit or cfg.load_in_8bit:
            raise ValueError("Fp32MasterWeightsPlugin: a quantized model (load_in_4bit/8bit) has no float32 weights "
                             "to keep; drop the plugin from this stage's plugins")
        if not cfg.bf16:  # `bf16: auto` resolved to float32 (or bf16 off): the model already trains in float32
            print("float32 master weights: bf16 is off, the model trains in float32 throughout", flush=True)
            return
        changed = to_float32(model)
        # A line in the training log, so a run shows that the switch took.
        print(f"float32 master weights: {changed} tensors cast to float32; forward and backward under bf16 autocast",
              flush=True)
