"""Expand a tokenizer's vocabulary (sentencepiece and byte-level BPE) and a model's embeddings."""

__version__ = "0.1.0"

__all__ = ["__version__"]
