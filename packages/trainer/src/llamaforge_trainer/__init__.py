"""Continual pre-training and SFT on ColossalAI's Booster: packed rows with attention kept
inside documents, chunked cross-entropy, multi-stage schedules, exact resume, HF export."""

from llamaforge_trainer.config import LoraConfig, StageConfig, TrainConfig, load_config
from llamaforge_trainer.errors import TrainError

__version__ = "0.1.0"


def train(config: TrainConfig):
    """Run ``config`` in this process (see :class:`llamaforge_trainer.trainer.Trainer`)."""
    from llamaforge_trainer.trainer import Trainer

    return Trainer(config).train()


__all__ = [
    "LoraConfig",
    "StageConfig",
    "TrainConfig",
    "TrainError",
    "__version__",
    "load_config",
    "train",
]
