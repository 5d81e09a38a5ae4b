"""ColossalAI setup: process group, plugin, Booster, optimizer and schedule — in one place.

Order matters and is always the same:
1. ``launch_from_torch`` (reads torchrun's env; gloo on CPU, nccl on GPU) — before any plugin.
2. the plugin (GPU-only ones refuse early, with a clear message, when CUDA is absent).
3. the optimizer over the parameters that are trainable *in this stage* — HybridAdam (fused
   CUDA / CPU kernels) on GPU, torch AdamW on CPU.
4. the warm-up + cosine schedule (Colossal-LLaMA's CosineAnnealingWarmupLR).
5. ``booster.boost`` wraps model and optimizer (DDP, ZeRO, Gemini, 3d).
Each stage calls 3-5 again, because what is trainable changes between stages.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llamaforge_trainer.config import StageConfig, TrainConfig
from llamaforge_trainer.errors import TrainError

GPU_ONLY = {"gemini", "gemini_auto", "zero2", "zero2_cpu", "3d"}


@dataclass
class Dist:
    rank: int
    world_size: int
    device: torch.device


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(seed: int) -> Dist:
    """Initialise the process group once (a single process runs as world size 1)."""
    if not dist.is_initialized():
        import colossalai

        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1:
            colossalai.launch_from_torch(backend=backend, seed=seed, verbose=False)
        else:
            # One process, no launcher: a private group on a free port, without touching the
            # environment (child processes must not inherit a port this process holds).
            colossalai.launch(
                rank=0,
                world_size=1,
                host="127.0.0.1",
                port=_free_port(),
                backend=backend,
                local_rank=0,
                seed=seed,
                verbose=False,
            )
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if torch.cuda.is_available()
        else torch.device("cpu")
    )
    return Dist(dist.get_rank(), dist.get_world_size(), device)


def build_plugin(config: TrainConfig):
    """The Booster plugin named in the config."""
    if config.plugin in GPU_ONLY and not torch.cuda.is_available():
        raise TrainError(
            f"plugin {config.plugin!r} needs CUDA, and no GPU is visible; use "
            "plugin = 'ddp' to train on CPU"
        )
    from colossalai.booster.plugin import (
        GeminiPlugin,
        HybridParallelPlugin,
        LowLevelZeroPlugin,
        TorchDDPPlugin,
    )

    precision = config.precision
    if config.plugin == "ddp":
        return TorchDDPPlugin()
    if config.plugin in ("gemini", "gemini_auto"):
        placement = "auto" if config.plugin == "gemini_auto" else "static"
        return GeminiPlugin(
            precision=precision,
            placement_policy=placement,
            offload_optim_frac=1.0 if config.cpu_offload else 0.0,
            initial_scale=2**16,
            max_norm=config.stages[0].max_grad_norm,
        )
    if config.plugin in ("zero2", "zero2_cpu"):
        return LowLevelZeroPlugin(
            stage=2,
            precision=precision,
            initial_scale=2**16,
            cpu_offload=config.plugin == "zero2_cpu",
            max_norm=config.stages[0].max_grad_norm,
        )
    return HybridParallelPlugin(
        tp_size=config.tp,
        pp_size=config.pp,
        sp_size=config.sp if config.sp > 1 else None,
        sequence_parallelism_mode=config.sp_mode if config.sp > 1 else None,
        enable_sequence_parallelism=config.sp > 1,
        zero_stage=config.zero_stage,
        cpu_offload=config.cpu_offload,
        precision=precision,
        # shardformer swaps in ColossalAI's fused RMSNorm and flash attention where available
        enable_fused_normalization=True,
        enable_flash_attention=True,
        microbatch_size=1,
        max_norm=config.stages[0].max_grad_norm,
        initial_scale=2**16,
    )


def build_optimizer(params, stage: StageConfig):
    """HybridAdam on GPU (fused kernels), AdamW on CPU; Colossal-LLaMA's betas and decay."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise TrainError(f"stage {stage.name!r} has no trainable parameters")
    if torch.cuda.is_available():
        from colossalai.nn.optimizer import HybridAdam

        return HybridAdam(
            params, lr=stage.lr, betas=stage.betas, weight_decay=stage.weight_decay, adamw_mode=True
        )
    return torch.optim.AdamW(
        params, lr=stage.lr, betas=stage.betas, weight_decay=stage.weight_decay
    )


def build_scheduler(optimizer, stage: StageConfig):
    """Linear warm-up then cosine decay to ``min_lr_ratio × lr`` over the stage's steps."""
    from colossalai.nn.lr_scheduler import CosineAnnealingWarmupLR

    warmup = int(stage.steps * stage.warmup_ratio)
    return CosineAnnealingWarmupLR(
        optimizer,
        total_steps=stage.steps,
        warmup_steps=warmup,
        eta_min=stage.lr * stage.min_lr_ratio,
    )


def boost(config: TrainConfig, module, stage: StageConfig):
    """Wrap ``module`` for ``stage``: returns (booster, model, optimizer, scheduler)."""
    from colossalai.booster import Booster

    plugin = build_plugin(config)
    mixed = None
    if config.plugin == "ddp" and config.precision != "fp32" and torch.cuda.is_available():
        mixed = config.precision  # torch autocast through the Booster
    booster = Booster(plugin=plugin, mixed_precision=mixed)
    optimizer = build_optimizer(module.parameters(), stage)
    scheduler = build_scheduler(optimizer, stage)
    model, optimizer, _, _, scheduler = booster.boost(module, optimizer, lr_scheduler=scheduler)
    return booster, model, optimizer, scheduler
