"""OpenAI-compatible inference server with continuous batching and streaming."""

__version__ = "0.1.0"

__all__ = ["__version__"]
