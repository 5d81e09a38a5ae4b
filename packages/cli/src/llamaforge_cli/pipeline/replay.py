"""Chat replay: the base instruction model's own answers, mixed into continual pre-training.

Continual pre-training on raw text can break an instruction model's chat (a model bridged to
Chinese that no longer says "Paris"). No chat data ships among the offline assets, so the
pipeline makes its own: the *base* model answers each prompt of a file greedily in its chat
template, and the conversations become SFT records (``messages``) that data-pack packs into
every dataset with the tokenizer's own chat template, the answers learned, the prompts not.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from llamaforge_cli.pipeline.recipe import PipelineError


def read_prompts(path: Path) -> list[str]:
    """The prompts of a text file, one per non-empty line."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise PipelineError(f"{path}: cannot read the chat replay prompts ({exc})") from None
    prompts = [line.strip() for line in lines if line.strip()]
    if not prompts:
        raise PipelineError(f"{path}: no chat replay prompts (one per line)")
    return prompts


def write_replay(
    model_dir: Path,
    prompts: list[str],
    out: Path,
    *,
    max_new_tokens: int,
    batch_size: int = 16,
    device: str = "auto",
    dtype: str = "auto",
    on_answer: Callable[[int], None] | None = None,
) -> dict:
    """Answer ``prompts`` with the model of ``model_dir`` (greedy, its chat template, on
    ``device`` in ``dtype`` as eval resolves them, ``batch_size`` prompts at a time) and write
    them to ``out`` as SFT jsonl. Returns counts: answers, characters, and how many stopped at
    ``max_new_tokens`` instead of ending."""
    from llamaforge_eval import chat_answers, load_model

    model, tok = load_model(model_dir, device=device, dtype=dtype)
    rows, cut, chars = [], 0, 0
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        answers = chat_answers(
            model, tok, batch, max_new_tokens=max_new_tokens, batch_size=len(batch)
        )
        for prompt, answer in zip(batch, answers, strict=True):
            ids = tok(answer, add_special_tokens=False).input_ids
            cut += len(ids) >= max_new_tokens - 1
            chars += len(prompt) + len(answer)
            turns = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
            rows.append({"messages": turns})
        if on_answer:
            on_answer(len(rows))
    with out.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {"answers": len(rows), "characters": chars, "stopped_at_limit": cut}
