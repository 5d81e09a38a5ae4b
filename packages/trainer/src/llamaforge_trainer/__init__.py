"""Continual pre-training and SFT on ColossalAI's Booster."""

__version__ = "0.1.0"

__all__ = ["__version__"]
