"""Greedy generation: characters generated per second, and chat answers.

A model that spends fewer tokens per character of a language writes that language faster at
the same cost per token; this measures it. Every prompt generates exactly ``max_new_tokens``
tokens (an end-of-text token is not allowed to stop it early), one prompt at a time, so the
time per token compares across models and the characters differ only by how much text each
token carries. Chat answers use the tokenizer's own chat template and stop at its end token.
"""

from __future__ import annotations

import json
import math
import os
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from llamaforge_eval.errors import EvalError


@dataclass
class Generation:
    """What :func:`generation_speed` measured."""

    prompts: int
    new_tokens: int
    characters: int
    """Characters generated, whitespace not counted."""
    cjk_characters: int
    """Of them, CJK ideographs."""
    seconds: float
    samples: list[str]

    @property
    def chars_per_s(self) -> float:
        return self.characters / self.seconds if self.seconds else 0.0

    @property
    def cjk_chars_per_s(self) -> float:
        return self.cjk_characters / self.seconds if self.seconds else 0.0

    @property
    def chars_per_token(self) -> float:
        return self.characters / self.new_tokens if self.new_tokens else 0.0

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "chars_per_s": self.chars_per_s,
            "cjk_chars_per_s": self.cjk_chars_per_s,
            "chars_per_token": self.chars_per_token,
        }


def _is_cjk(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith("CJK UNIFIED IDEOGRAPH")


def generation_speed(
    model,
    tok,
    prompts: list[str],
    *,
    max_new_tokens: int = 64,
    repeats: int = 2,
    batch_size: int = 1,
) -> Generation:
    """Greedy continuation of each prompt by ``max_new_tokens`` tokens (a loaded model and its
    tokenizer, see :func:`llamaforge_eval.runner.load_model`), ``batch_size`` prompts at a
    time (left-padded; 1: one stream, as a single user sees it). The first batch is run once
    before timing so that one-off set-up is not counted, and each batch is timed ``repeats``
    times, keeping the fastest (greedy: the same tokens each time), so that what else the
    machine does at that moment does not decide the comparison."""
    if not prompts:
        raise EvalError("generation: no prompts")
    if max_new_tokens < 1 or repeats < 1 or batch_size < 1:
        raise EvalError(
            "max_new_tokens, repeats and batch_size must be ≥ 1, got "
            f"{max_new_tokens}, {repeats}, {batch_size}"
        )
    batches = [prompts[i : i + batch_size] for i in range(0, len(prompts), batch_size)]
    _greedy_batch(model, tok, batches[0], min(4, max_new_tokens))  # warm-up
    texts, tokens, seconds = [], 0, 0.0
    for batch in batches:
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            new = _greedy_batch(model, tok, batch, max_new_tokens)
            best = min(best, time.perf_counter() - start)
        seconds += best
        tokens += sum(len(ids) for ids in new)
        texts += [tok.decode(ids, skip_special_tokens=True) for ids in new]
    chars = [c for t in texts for c in t if not c.isspace()]
    return Generation(
        prompts=len(prompts),
        new_tokens=tokens,
        characters=len(chars),
        cjk_characters=sum(_is_cjk(c) for c in chars),
        seconds=seconds,
        samples=texts,
    )


def _greedy_batch(model, tok, texts: list[str], n: int, *, exact: bool = True) -> list[list[int]]:
    """The new token ids of greedy continuations of ``texts``, generated together (shorter
    prompts padded on the left): exactly ``n`` each (``exact``: an end token does not stop
    them), or at most ``n``, a finished row padded to the longest."""
    import torch

    if len(texts) == 1:
        return [_greedy(model, tok, texts[0], n, exact=exact).tolist()]
    encoded = [tok(t, add_special_tokens=False).input_ids for t in texts]
    width = max(len(ids) for ids in encoded)
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    ids = torch.tensor([[pad] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model.generate(
            ids.to(device),
            attention_mask=mask.to(device),
            max_new_tokens=n,
            min_new_tokens=n if exact else None,
            do_sample=False,
            pad_token_id=pad,
        )
    return [row.tolist() for row in out[:, width:]]


def _greedy(model, tok, text: str, n: int, *, exact: bool):
    """The new token ids of a greedy continuation of ``text``: exactly ``n`` (``exact``: an
    end token does not stop it) or at most ``n``."""
    import torch

    ids = tok(text, return_tensors="pt", add_special_tokens=False).input_ids
    ids = ids.to(next(model.parameters()).device)
    with torch.no_grad():
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=n,
            min_new_tokens=n if exact else None,
            do_sample=False,
            pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
        )
    return out[0, ids.shape[1] :]


def chat_answer(model, tok, question: str, *, max_new_tokens: int = 48) -> str:
    """The greedy answer to one user message, in the tokenizer's chat template (a plain
    ``question`` prompt where the tokenizer has none)."""
    return chat_answers(model, tok, [question], max_new_tokens=max_new_tokens)[0]


def chat_answers(
    model, tok, questions: list[str], *, max_new_tokens: int = 48, batch_size: int = 1
) -> list[str]:
    """:func:`chat_answer` for each of ``questions``, ``batch_size`` at a time (left-padded;
    each answer ends at the first end token, as it does alone)."""
    if batch_size < 1:
        raise EvalError(f"batch_size must be ≥ 1, got {batch_size}")
    texts = [_chat_prompt(tok, q) for q in questions]
    ends = _end_ids(model, tok)
    answers = []
    for i in range(0, len(texts), batch_size):
        rows = _greedy_batch(model, tok, texts[i : i + batch_size], max_new_tokens, exact=False)
        for row in rows:
            cut = next((k for k, t in enumerate(row) if t in ends), len(row))
            answers.append(tok.decode(row[:cut], skip_special_tokens=True).strip())
    return answers


def _chat_prompt(tok, question: str) -> str:
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, tokenize=False
        )
    return question


def _end_ids(model, tok) -> set[int]:
    """The token ids that end a generation: the model's generation config's, else the
    tokenizer's end-of-text token."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = tok.eos_token_id
    return set(eos) if isinstance(eos, list) else ({eos} if eos is not None else set())


def compare_generation(
    model_dirs: Mapping[str, str | Path],
    *,
    prompts: list[str],
    questions: list[str] | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 1,
    rounds: int = 3,
    device: str = "auto",
    dtype: str = "auto",
    resident: bool | None = None,
) -> dict[str, dict]:
    """:func:`evaluate_generation` for several models, timed so that they compare: each round
    times every model once on the same ``prompts`` (the order rotated from round to round) and
    each model keeps its fastest round, so a minute in which the machine is busy with something
    else slows one round of every model, not every round of one. The models are held in memory
    together (``resident``; None: when their weights fit in 80 % of the device's free memory),
    else each is loaded again for its turn, the loading not timed. Returns label → the dict
    :func:`evaluate_generation` returns, with ``rounds``: each round's characters per second
    (no ``generation`` without ``prompts``: chat answers only)."""
    from llamaforge_eval.device import resolve_device, resolve_dtype
    from llamaforge_eval.runner import load_model

    if rounds < 1:
        raise EvalError(f"rounds must be ≥ 1, got {rounds}")
    asked = list(questions or [])
    if not prompts and not asked:
        raise EvalError("generation: no prompts and no questions")
    device = resolve_device(device)
    labels = list(model_dirs)
    dtypes = {k: resolve_dtype(dtype, Path(model_dirs[k]), device) for k in labels}
    if resident is None:
        resident = _fits(device, [Path(d) for d in model_dirs.values()], dtypes.values())
    held: dict[str, tuple] = {}

    def loaded(label: str):
        if label in held:
            return held[label]
        pair = load_model(model_dirs[label], device=device, dtype=dtypes[label])
        if resident:
            held[label] = pair
        return pair

    best: dict[str, Generation] = {}
    per_round: dict[str, list[float]] = {k: [] for k in labels}
    chat: dict[str, dict[str, str]] = {}
    for r in range(rounds):
        for label in labels[r % len(labels) :] + labels[: r % len(labels)]:
            model, tok = loaded(label)
            if prompts:
                g = generation_speed(
                    model,
                    tok,
                    prompts,
                    max_new_tokens=max_new_tokens,
                    repeats=1,
                    batch_size=batch_size,
                )
                per_round[label].append(g.chars_per_s)
                if label not in best or g.seconds < best[label].seconds:
                    best[label] = g
            if label not in chat:
                chat[label] = dict(zip(asked, chat_answers(model, tok, asked), strict=True))
        if not prompts:
            break  # chat answers only: nothing to time
    timed = {k: {"generation": best[k].to_dict(), "rounds": per_round[k]} for k in best}
    return {
        k: {"device": device, "dtype": dtypes[k], **timed.get(k, {}), "chat": chat[k]}
        for k in labels
    }


def _fits(device: str, model_dirs: list[Path], dtypes) -> bool:
    """Whether the weights of every model, in the dtype each is evaluated in, fit in 80 % of
    the device's free memory."""
    import torch

    need = sum(
        _parameters(d) * (4 if dt == "float32" else 2)
        for d, dt in zip(model_dirs, dtypes, strict=True)
    )
    if device.startswith("cuda"):
        free, _ = torch.cuda.mem_get_info(torch.device(device))
    else:
        free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    return need < 0.8 * free


def _parameters(model_dir: Path) -> int:
    """Parameters in a model dir's safetensors files, from their headers (other weight files:
    their bytes, as if stored in 16 bits)."""
    total = 0
    for f in model_dir.iterdir():
        if f.suffix == ".safetensors":
            with f.open("rb") as fh:
                header = json.loads(fh.read(int.from_bytes(fh.read(8), "little")))
            total += sum(math.prod(t["shape"]) for k, t in header.items() if k != "__metadata__")
        elif f.suffix in (".bin", ".gguf", ".pt"):
            total += f.stat().st_size // 2
    return total


PROMPT_CHARS = 32
"""Characters of a held-out document that make a generation prompt (the pipeline's and the
benchmark's)."""


def read_prompts(
    paths: str | Path | list[str | Path], *, limit: int | None = None, chars: int = PROMPT_CHARS
) -> list[str]:
    """Prompts from text files read in order: the first ``chars`` characters of each non-empty
    line, stripped (the first ``limit`` lines in all)."""
    prompts: list[str] = []
    paths = paths if isinstance(paths, list) else [paths]
    for path in paths:
        try:
            lines = Path(path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise EvalError(f"{path}: cannot read prompts ({exc})") from None
        prompts += [ln.strip()[:chars] for ln in lines if ln.strip()]
        if limit is not None and len(prompts) >= limit:
            break
    if not prompts:
        raise EvalError(f"{', '.join(map(str, paths))}: no prompts (no non-empty line)")
    return prompts[:limit]


def evaluate_generation(
    model_dir: str | Path,
    *,
    prompts: list[str],
    questions: list[str] | None = None,
    max_new_tokens: int = 64,
    batch_size: int = 1,
    device: str = "auto",
    dtype: str = "auto",
) -> dict:
    """Load ``model_dir`` once; measure :func:`generation_speed` on ``prompts`` and answer
    each of ``questions`` with :func:`chat_answer`. Returns a JSON-ready dict
    (``generation`` and ``chat``: question → answer), with the device and dtype used."""
    from llamaforge_eval.device import resolve_device, resolve_dtype
    from llamaforge_eval.runner import load_model

    device = resolve_device(device)
    dtype = resolve_dtype(dtype, Path(model_dir), device)
    model, tok = load_model(model_dir, device=device, dtype=dtype)
    speed = generation_speed(
        model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size
    )
    chat = {q: chat_answer(model, tok, q) for q in questions or []}
    return {"device": device, "dtype": dtype, "generation": speed.to_dict(), "chat": chat}
