"""MMLU, CMMLU, C-Eval, AGIEval, GAOKAO-Bench, GSM8K, compression and bits per character."""

__version__ = "0.1.0"

__all__ = ["__version__"]
