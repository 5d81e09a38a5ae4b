"""Evaluate LLaMA-family models: MMLU, CMMLU, C-Eval, AGIEval, GAOKAO-Bench and GSM8K from local
files in their official layouts, plus tokens per character and bits per character on text.

The model-running names (``Runner``, ``load_model``, ``evaluate_*``) import torch and are
loaded on first use, so ``llamaforge --help`` and the loaders stay light.
"""

from llamaforge_eval.device import resolve_device, resolve_dtype
from llamaforge_eval.errors import EvalError
from llamaforge_eval.loaders import Benchmark, Question, gsm8k_number, load_benchmark
from llamaforge_eval.results import compare, read_results, write_results

__version__ = "0.1.0"

_LAZY = {
    "Runner": "llamaforge_eval.runner",
    "load_model": "llamaforge_eval.runner",
    "evaluate_benchmark": "llamaforge_eval.evaluate",
    "evaluate_text": "llamaforge_eval.evaluate",
    "evaluate_model": "llamaforge_eval.evaluate",
    "evaluate_generation": "llamaforge_eval.generate",
    "compare_generation": "llamaforge_eval.generate",
    "where_bits": "llamaforge_eval.attribution",
    "generation_speed": "llamaforge_eval.generate",
    "chat_answer": "llamaforge_eval.generate",
    "chat_answers": "llamaforge_eval.generate",
    "read_prompts": "llamaforge_eval.generate",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'llamaforge_eval' has no attribute {name!r}")


__all__ = [
    "Benchmark",
    "EvalError",
    "Question",
    "Runner",
    "__version__",
    "compare",
    "compare_generation",
    "chat_answer",
    "chat_answers",
    "evaluate_benchmark",
    "evaluate_generation",
    "evaluate_model",
    "evaluate_text",
    "generation_speed",
    "gsm8k_number",
    "load_benchmark",
    "load_model",
    "read_prompts",
    "read_results",
    "resolve_device",
    "resolve_dtype",
    "where_bits",
    "write_results",
]
