"""ColossalAI setup: process group, plugin, Booster, optimizer and schedule — in one place.

Order matters and is always the same:
1. ``launch_from_torch`` (reads torchrun's env; gloo on CPU, nccl on GPU) — before any plugin.
2. the plugin (GPU-only ones refuse early, with a clear message, when CUDA is absent).
3. the optimizer over the parameters that are trainable *in this stage* — HybridAdam (fused
   CUDA / CPU kernels) on GPU where ColossalAI's kernels build, else torch's AdamW.
4. the warm-up + cosine schedule (Colossal-LLaMA's CosineAnnealingWarmupLR).
5. ``booster.boost`` wraps model and optimizer (DDP, ZeRO, Gemini, 3d).
Each stage calls 3-5 again, because what is trainable changes between stages.

Weights are loaded in fp32 for every plugin: ZeRO, Gemini and 3d cast the module to the
compute precision themselves and keep fp32 master weights in the optimizer; ``ddp`` keeps fp32
weights and runs the forward under ``torch.autocast`` (bf16), or ColossalAI's torch AMP with
a loss scaler (fp16, CUDA only).
"""

from __future__ import annotations

import importlib.util
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from llamaforge_trainer.config import StageConfig, TrainConfig
from llamaforge_trainer.errors import TrainError

GPU_ONLY = {"gemini", "gemini_auto", "zero2", "zero2_cpu"}
LAZY = {"gemini", "gemini_auto", "3d"}  # built under LazyInitContext, as Colossal-LLaMA does

log = logging.getLogger(__name__)


@dataclass
class Dist:
    rank: int
    world_size: int
    device: torch.device


@dataclass
class Layout:
    """How the processes split the work, as the plugin set it up.

    ``dp_*``: the data-parallel group — ranks in it read different rows; ranks outside it in
    the same tensor / sequence group read the same rows. ``grad_average``: how many ranks the
    plugin averages gradients over (data × sequence parallel for ``all_to_all``), which the
    loss scale has to undo. ``sp_group``: set for ``all_to_all`` sequence parallelism, whose
    ranks each compute the loss of their slice of the rows (so it is summed over the group,
    and the average over it is a sum of slices). ``tp_group``: the tensor-parallel group of a
    sharded LM head. ``stage_manager`` / ``pp_group``: the pipeline's, when the plugin
    pipelines (``pp > 1``).
    """

    dp_group: object
    dp_rank: int
    dp_size: int
    grad_average: int
    tp_group: object = None
    sp_group: object = None
    stage_manager: object = None
    pp_group: object = None


def layout(plugin) -> Layout:
    """The :class:`Layout` a boosted plugin gives this rank."""
    from colossalai.booster.plugin import HybridParallelPlugin

    if isinstance(plugin, HybridParallelPlugin):
        group = plugin.dp_group
        config = plugin.shard_config
        sliced = (
            config.enable_sequence_parallelism and config.sequence_parallelism_mode == "all_to_all"
        )
        return Layout(
            dp_group=group,
            dp_rank=dist.get_rank(group),
            dp_size=dist.get_world_size(group),
            grad_average=dist.get_world_size(plugin.mixed_dp_group),
            tp_group=plugin.tp_group if plugin.tp_size > 1 else None,
            sp_group=plugin.sp_group if sliced else None,
            stage_manager=plugin.stage_manager if plugin.pp_size > 1 else None,
            pp_group=plugin.pp_group if plugin.pp_size > 1 else None,
        )
    world = dist.get_world_size()
    return Layout(dist.group.WORLD, dist.get_rank(), world, world)


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


def can_skip_sync(config: TrainConfig) -> bool:
    """Whether the plugin can hold back gradient synchronisation between micro-batches
    (Gemini cannot, nor ZeRO-2 inside the 3d plugin; they sync every micro-batch instead)."""
    if config.plugin in ("gemini", "gemini_auto"):
        return False
    return not (config.plugin == "3d" and config.zero_stage == 2)


def build_plugin(config: TrainConfig, stage: StageConfig):
    """The Booster plugin named in the config (gradient clipping at the stage's norm)."""
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
            max_norm=stage.max_grad_norm,
        )
    if config.plugin in ("zero2", "zero2_cpu"):
        return LowLevelZeroPlugin(
            stage=2,
            precision=precision,
            initial_scale=2**16,
            cpu_offload=config.plugin == "zero2_cpu",
            max_norm=stage.max_grad_norm,
        )
    from llamaforge_trainer.compat import apply_all
    from llamaforge_trainer.sharding import packed_llama_policy

    if not torch.cuda.is_available() and config.zero_stage > 0:
        raise TrainError("plugin '3d': zero_stage > 0 needs CUDA; on CPU use zero_stage = 0")
    apply_all()
    world = dist.get_world_size()
    if world % (config.tp * config.pp * config.sp_group_size):
        raise TrainError(
            f"plugin '3d': {world} processes cannot be split into tp={config.tp} × pp="
            f"{config.pp} × sp={config.sp} groups (the world size must be a multiple)"
        )
    return HybridParallelPlugin(
        tp_size=config.tp,
        pp_size=config.pp,
        # 1F1B over the step's micro-batches (gradient accumulation is the pipeline's fill)
        num_microbatches=stage.grad_accum if config.pp > 1 else None,
        sp_size=config.sp if config.sp > 1 else None,
        sequence_parallelism_mode=config.sp_mode if config.sp > 1 else None,
        enable_sequence_parallelism=config.sp > 1,
        zero_stage=config.zero_stage,
        cpu_offload=config.cpu_offload,
        precision=precision,
        # apex's fused RMSNorm where installed (ShardFormer 0.5.0 fails without apex instead
        # of falling back); its flash attention stays off: it would let packed documents see
        # each other
        enable_fused_normalization=importlib.util.find_spec("apex") is not None,
        enable_flash_attention=False,
        custom_policy=packed_llama_policy(),
        # no vocabulary padding beyond what tp needs: ColossalAI 0.5.0 cannot gather the
        # optimizer state of a padded embedding when it saves (the Trainer checks vocab % tp)
        make_vocab_size_divisible_by=1,
        max_norm=stage.max_grad_norm,
        initial_scale=2**16,
    )


def param_groups(params, stage: StageConfig, embeddings=()) -> list:
    """The trainable ``params`` as optimizer groups: the ``embeddings`` matrices in a group of
    their own when the stage gives them ``embedding_lr``."""
    params = [p for p in params if p.requires_grad]
    if not params:
        raise TrainError(f"stage {stage.name!r} has no trainable parameters")
    if stage.embedding_lr is None:
        return params
    ids = {id(e) for e in embeddings}
    own = [p for p in params if id(p) in ids]
    rest = [p for p in params if id(p) not in ids]
    return [g for g in ({"params": own, "lr": stage.embedding_lr}, {"params": rest}) if g["params"]]


def build_optimizer(params, stage: StageConfig, config: TrainConfig):
    """The stage's optimizer over its trainable ``params`` (a list, or groups from
    :func:`param_groups`), with Colossal-LLaMA's betas and decay: ColossalAI's HybridAdam
    (fused CUDA kernel, and its CPU kernel for offloaded states) or torch's AdamW, as
    ``config.optimizer`` asks (see :class:`TrainConfig`)."""
    params = list(params)
    if not params:
        raise TrainError(f"stage {stage.name!r} has no trainable parameters")
    # new-embeddings: decay would shrink the old rows, whose gradient is held at zero
    decay = 0.0 if stage.trainable == "new-embeddings" else stage.weight_decay
    kw = {"lr": stage.lr, "betas": stage.betas, "weight_decay": decay}
    choice, cuda = config.optimizer, torch.cuda.is_available()
    needs_hybrid = choice == "hybrid_adam" or config.plugin in ("gemini", "gemini_auto")
    if choice != "adamw" and cuda:
        try:
            from colossalai.nn.optimizer import HybridAdam

            # builds ColossalAI's kernels on first use (cached under ~/.cache/colossalai)
            return HybridAdam(params, adamw_mode=True, **kw)
        except Exception as exc:  # noqa: BLE001 - a kernel build fails in many ways
            reason = _build_failure(exc)
            if needs_hybrid:
                hint = (
                    "set optimizer = 'auto' to fall back to torch's AdamW"
                    if choice == "hybrid_adam"
                    else "Gemini runs with it only"
                )
                raise TrainError(
                    f"HybridAdam's kernels do not build here ({reason}); {hint}"
                ) from None
            log.warning("HybridAdam's kernels do not load (%s); using torch's fused AdamW", reason)
    elif choice == "hybrid_adam":  # (Gemini without CUDA is refused with the plugin)
        raise TrainError(
            "optimizer 'hybrid_adam' needs CUDA (ColossalAI builds its kernels with nvcc); "
            "use 'auto', which takes torch's AdamW here"
        )
    # fused: one kernel per step, on CUDA and on CPU (where torch's default is a Python loop
    # over the tensors: 0.7 s against 0.12 s a step for SmolLM2-135M + 16,000 rows on 2 cores);
    # offloaded states (cpu_offload with CUDA) keep the default
    return torch.optim.AdamW(params, fused=not (cuda and config.cpu_offload), **kw)


def _build_failure(exc: BaseException) -> str:
    """What went wrong, in one line, from an exception whose message may hold a compiler
    log: its first ``error:`` line (``fatal error: cublas_v2.h: No such file``), else its
    last line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    return (errors or lines[-1:] or [type(exc).__name__])[0][:300]


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
    """Wrap ``module`` for ``stage``: returns (booster, model, optimizer, scheduler, layout)."""
    from colossalai.booster import Booster

    plugin = build_plugin(config, stage)
    mixed = None
    if config.plugin == "ddp" and config.precision == "fp16":
        mixed = "fp16"  # torch AMP with a loss scaler; bf16 runs under autocast (trainer)
    booster = Booster(plugin=plugin, mixed_precision=mixed)
    base = module.base()
    embeddings = (base.get_input_embeddings().weight, base.get_output_embeddings().weight)
    groups = param_groups(module.parameters(), stage, embeddings)
    optimizer = build_optimizer(groups, stage, config)
    scheduler = build_scheduler(optimizer, stage)
    model, optimizer, _, _, scheduler = booster.boost(module, optimizer, lr_scheduler=scheduler)
    parts = layout(plugin)
    module.tp_group = parts.tp_group
    module.sp_group = parts.sp_group
    module.stage_manager = parts.stage_manager
    return booster, model, optimizer, scheduler, parts
