"""Continual pre-training and SFT on ColossalAI's Booster: packed rows with attention kept
inside documents, chunked cross-entropy, multi-stage schedules, exact resume, HF export."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamaforge_trainer.config import LoraConfig, StageConfig, TrainConfig
from llamaforge_trainer.errors import TrainError
from llamaforge_trainer.quiet import quiet_known_messages
from llamaforge_trainer.recipe import apply_override, build_config, load_config
from llamaforge_trainer.startup import no_compile_pool

if TYPE_CHECKING:
    from pathlib import Path

    from rich.console import Console

    from llamaforge_trainer.trainer import TrainResult

__version__ = "0.1.0"


def train(config: TrainConfig, *, console: Console | None = None) -> TrainResult:
    """Run ``config`` in this process (one rank of a torchrun launch, or alone). With a
    ``console``, rank 0 shows a progress bar and a summary on it."""
    if console is not None:
        from llamaforge_trainer.cli import run

        return run(config, console)
    from llamaforge_trainer.trainer import Trainer

    return Trainer(config).train()


def matmul_parameters_of(model_dir: str | Path) -> int:
    """Parameters of the HF model in ``model_dir`` that take part in a matrix product per
    token (all but the input embedding, the output projection included even when tied): a
    training token costs 6 FLOPs per parameter. Counted without reading the weights."""
    from llamaforge_trainer.metrics import matmul_parameters_of as count

    return count(model_dir)


def resolve_precision(setting: str, device: str = "cpu") -> str:
    """What ``precision = setting`` trains in on ``device``: ``auto`` is bf16 where the device
    computes it natively (a GPU with bf16, a CPU with AVX512-BF16 or AMX units), else fp32."""
    import torch

    from llamaforge_trainer.metrics import resolve_precision as resolve

    return resolve(setting, torch.device(device))


__all__ = [
    "LoraConfig",
    "StageConfig",
    "TrainConfig",
    "TrainError",
    "__version__",
    "apply_override",
    "build_config",
    "load_config",
    "matmul_parameters_of",
    "no_compile_pool",
    "quiet_known_messages",
    "resolve_precision",
    "train",
]
