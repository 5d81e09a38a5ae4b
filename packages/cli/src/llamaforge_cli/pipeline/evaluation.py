"""The pipeline's eval stage: every arm (base, control, result) scored the same way — held-out
text, benchmarks, greedy generation timed in alternating rounds, the chat questions — on one
device and in one precision, and the tokenizers' compression of the held-out text."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console

from llamaforge_cli.pipeline.recipe import Recipe


def evaluate_arms(
    recipe: Recipe, arms: dict[str, Path], tokenizer: Path, folder: Path, console: Console
) -> None:
    """Evaluate ``arms`` (label → model dir; ``base`` among them) as ``recipe.eval`` says, the
    new ``tokenizer``'s compression against the base model's; write ``LABEL.json`` and the
    compression table and plot into ``folder``."""
    from llamaforge_eval import (
        compare_generation,
        evaluate_model,
        read_prompts,
        resolve_device,
        resolve_dtype,
        write_results,
    )
    from llamaforge_tokenizer import measure, plot_compression

    e = recipe.eval
    texts = text_files(recipe)
    benchmarks = {kind: recipe.resolve(d) for kind, d in e.benchmarks.items()}
    # one device and one precision for every model, decided from the base model
    device = resolve_device(e.device)
    dtype = resolve_dtype(e.dtype, arms["base"], device)
    target = e.target_label()
    prompts = read_prompts(texts[target], limit=e.generation_prompts) if target else []
    questions = [q for q in (recipe.chat_prompt, recipe.chat_prompt_target) if q]
    results = {}
    for label, model in arms.items():
        with console.status(f"evaluating {label}") as status:
            results[label] = evaluate_model(
                model,
                benchmarks=benchmarks,
                texts=texts,
                shots=e.shots,
                metric=e.metric,
                max_docs=e.max_docs,
                device=device,
                dtype=dtype,
                on_status=lambda m, label=label, status=status: status.update(f"{label}: {m}"),
            )
    if prompts or questions:
        # every model timed in each round, so that they compare on a shared machine
        with console.status(f"generating: {', '.join(arms)}, {e.generation_rounds} rounds"):
            generated = compare_generation(
                arms,
                prompts=prompts,
                questions=questions,
                max_new_tokens=e.generation_tokens,
                batch_size=e.generation_batch,
                rounds=e.generation_rounds,
                device=device,
                dtype=dtype,
            )
        for label in arms:
            results[label].update(generated[label])
    for label in arms:
        write_results(folder / f"{label}.json", results[label])
    rows = measure({"old": arms["base"], "new": tokenizer}, texts)
    plot_compression(rows, folder / "compression.png")
    (folder / "compression.json").write_text(json.dumps([r.to_dict() for r in rows], indent=2))


def text_files(recipe: Recipe) -> dict[str, list[Path]]:
    """The held-out text files of each ``recipe.eval.text`` label, resolved."""
    return {label: [recipe.resolve(f) for f in files] for label, files in recipe.eval.text.items()}
