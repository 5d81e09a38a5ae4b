"""Tokenise and pack pretraining and SFT data into fixed-length rows without losing tokens."""

__version__ = "0.1.0"

__all__ = ["__version__"]
