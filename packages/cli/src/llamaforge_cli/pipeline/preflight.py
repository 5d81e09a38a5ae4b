"""Check everything a recipe reads before its first stage runs: every problem in one error,
so a missing corpus or a bad benchmark dir is not found an hour into training."""

from __future__ import annotations

import glob
from pathlib import Path

from llamaforge_cli.pipeline.recipe import PipelineError, Recipe


def check_inputs(recipe: Recipe) -> None:
    """Raise one PipelineError listing each input of ``recipe`` that is missing or unreadable:
    the base model, the corpus and word list, every data source, the held-out text, and each
    benchmark dir (read with eval's own loader, so its layout is checked too)."""
    problems: list[str] = []

    def need_file(where: str, value: str) -> None:
        path = recipe.resolve(value)
        if not path.is_file():
            problems.append(f"{where}: {path}: no such file")

    base = recipe.resolve(recipe.base_model)
    if not (base / "config.json").is_file():
        problems.append(f"base_model: {base}: not an HF model dir (no config.json)")
    for i, corpus in enumerate(recipe.vocab.corpus):
        need_file(f"vocab.corpus.{i}", corpus)
    if recipe.vocab.word_list:
        need_file("vocab.word_list", recipe.vocab.word_list)
    problems += _source_problems(recipe)
    for label, files in recipe.eval.text.items():
        for i, value in enumerate(files):
            need_file(f"eval.text.{label}.{i}", value)
    problems += _benchmark_problems(recipe)
    if problems:
        raise PipelineError(f"{recipe.path}: missing inputs:\n  " + "\n  ".join(problems))


def _source_problems(recipe: Recipe) -> list[str]:
    from llamaforge_datapack import Source

    problems = []
    for name, data in recipe.data.items():
        for i, spec in enumerate(data.sources):
            source = Source.parse(spec, i)
            for value in source.inputs:
                path = recipe.resolve(value)
                if not (path.exists() or glob.glob(str(path), recursive=True)):
                    problems.append(f"data.{name}.sources.{i}: {path}: no such file, dir or glob")
    return problems


def _benchmark_problems(recipe: Recipe) -> list[str]:
    from llamaforge_eval import EvalError, load_benchmark

    problems = []
    for kind, folder in recipe.eval.benchmarks.items():
        try:
            load_benchmark(kind, Path(recipe.resolve(folder)))
        except EvalError as exc:
            problems.append(f"eval.benchmarks.{kind}: {exc}")
    return problems
