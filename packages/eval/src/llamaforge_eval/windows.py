"""How a document is laid out for scoring, the same for every backend and for ``where``.

Every token of a document is scored, the first one too: the document follows a start token —
the tokenizer's BOS where it has one (added by the tokenizer itself or not), else its end
token, as lm-evaluation-harness's rolling log-likelihood does. Without it the first token
would be free, and free text is not free alike for every model: a tokenizer whose first token
spans a whole word gets more characters for nothing than one that spells the first character
in bytes (the bias this replaces, about 1 % of a 100-character document).

A document longer than the model's context is scored in windows that overlap by one token,
so that each window's first target has the previous token as context and every token is a
target exactly once.
"""

from __future__ import annotations


def start_token(tok) -> int | None:
    """The id a document is scored after: BOS, else the end token; None when there is neither
    (then the first token cannot be scored)."""
    for tid in (tok.bos_token_id, tok.eos_token_id):
        if tid is not None:
            return int(tid)
    return None


def with_start(tok, ids: list[int]) -> tuple[list[int], int]:
    """``ids`` after the start token (unless the tokenizer already put it first), and how many
    ids were put in front (0 or 1)."""
    start = start_token(tok)
    if start is None or (ids and ids[0] == start and start == tok.bos_token_id):
        return list(ids), 0
    return [start, *ids], 1


def windows(n: int, length: int) -> list[tuple[int, int]]:
    """``[lo, hi)`` slices of a sequence of ``n`` ids, each at most ``length`` long, where the
    targets ``lo + 1 .. hi - 1`` of the windows cover ``1 .. n - 1`` exactly once."""
    if length < 2:
        raise ValueError(f"a scoring window needs at least 2 tokens, got {length}")
    return [(lo, min(lo + length, n)) for lo in range(0, max(n - 1, 0), length - 1)]
