"""Continual pre-training and SFT on ColossalAI's Booster: packed rows with attention kept
inside documents, chunked cross-entropy, multi-stage schedules, exact resume, HF export."""

from __future__ import annotations

from typing import TYPE_CHECKING

from llamaforge_trainer.config import (
    LoraConfig,
    StageConfig,
    TrainConfig,
    build_config,
    load_config,
)
from llamaforge_trainer.errors import TrainError
from llamaforge_trainer.quiet import quiet_known_messages

if TYPE_CHECKING:
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


__all__ = [
    "LoraConfig",
    "StageConfig",
    "TrainConfig",
    "TrainError",
    "__version__",
    "build_config",
    "load_config",
    "quiet_known_messages",
    "train",
]
