"""Fused kernels for the GPU, each optional with the plain PyTorch path as its fallback.

* RMSNorm: Liger's Triton kernel (``pip install 'llamaforge-trainer[gpu]'``, i.e.
  ``liger-kernel``) replaces every ``LlamaRMSNorm`` of the model in place — same weight
  parameter, one kernel for forward and one for backward instead of five elementwise passes.
  apex is not on PyPI; where it is installed, the ``3d`` plugin uses its fused RMSNorm through
  ShardFormer instead.
* Adam: ColossalAI's ``HybridAdam`` (fused CUDA kernel), chosen in ``booster.py``; torch's
  fused AdamW where ColossalAI's kernels do not build.
* Cross-entropy: the chunked loss in ``packed.py`` (never full fp32 logits) on every device.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

from llamaforge_trainer.errors import TrainError

NORM_CLASSES = ("LlamaRMSNorm",)


def fused_rmsnorm_available() -> bool:
    """Liger's Triton RMSNorm can run here (liger-kernel installed and a CUDA device)."""
    return torch.cuda.is_available() and importlib.util.find_spec("liger_kernel") is not None


def use_fused_rmsnorm(model: nn.Module, setting: str) -> int:
    """Swap the model's RMSNorm modules for the fused one per ``setting`` (``auto``: where
    available, ``on``: required, ``off``); return how many were swapped."""
    if setting == "off" or (setting == "auto" and not fused_rmsnorm_available()):
        return 0
    if not fused_rmsnorm_available():
        raise TrainError(
            "fused_rmsnorm = 'on' needs a CUDA device and liger-kernel "
            "(pip install 'llamaforge-trainer[gpu]'); use 'auto' to fall back"
        )
    from liger_kernel.transformers.rms_norm import LigerRMSNorm

    swapped = 0
    for name, module in list(model.named_modules()):
        if type(module).__name__ not in NORM_CLASSES:
            continue
        fused = LigerRMSNorm(module.weight.shape[0], eps=module.variance_epsilon)
        fused.weight = module.weight  # the same parameter: optimizer, checkpoints, export
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, fused)
        swapped += 1
    return swapped
