"""Evaluate LLaMA-family models: MMLU, CMMLU, C-Eval, AGIEval, GAOKAO-Bench and GSM8K from local
files in their official layouts, plus tokens per character and bits per character on text."""

from llamaforge_eval.errors import EvalError
from llamaforge_eval.evaluate import evaluate_benchmark, evaluate_text
from llamaforge_eval.loaders import Benchmark, Question, gsm8k_number, load_benchmark
from llamaforge_eval.results import compare, read_results, write_results
from llamaforge_eval.runner import Runner, load_model

__version__ = "0.1.0"

__all__ = [
    "Benchmark",
    "EvalError",
    "Question",
    "Runner",
    "__version__",
    "compare",
    "evaluate_benchmark",
    "evaluate_text",
    "gsm8k_number",
    "load_benchmark",
    "load_model",
    "read_results",
    "write_results",
]
