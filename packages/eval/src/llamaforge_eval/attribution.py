"""Where an expanded model wins and loses bits against a reference model on the same text.

Bits per character says which model is better; it does not say where. Here both models score
every token of the same documents, and the reference model's bits are carried onto the
expanded model's tokens: a reference token belongs to the expanded token whose span holds the
reference token's last character (an expanded vocabulary contains the old one, so its tokens
cover whole reference tokens almost always). Each expanded token is then put in a kind — an
old token (an id below the model's ``expanded_from_vocab_size``) or a new piece of one, two,
or three or more characters — and each kind gets its characters and both models' bits per
character on them. Both models score every token, the first one after the start token, as
``eval run`` does (:mod:`llamaforge_eval.windows`); a span either model could not score (a
tokenizer with neither BOS nor EOS leaves a document's first token without context) is left
out of both sides, so the two columns always cover the same characters.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from llamaforge_eval.errors import EvalError
from llamaforge_eval.windows import windows, with_start

KINDS = ("old token", "new piece, 1 character", "new piece, 2 characters", "new piece, 3+")


@dataclass(frozen=True)
class ScoredText:
    """One document's tokens: their ids, the character offsets where each starts and ends, and
    the bits the model spent on each (NaN where it was not scored)."""

    ids: list[int]
    starts: list[int]
    ends: list[int]
    bits: list[float]


@dataclass(frozen=True)
class KindRow:
    """One kind of expanded token: how many there were, their characters, and the bits each
    model spent on those characters."""

    kind: str
    tokens: int
    characters: int
    model_bits: float
    reference_bits: float

    @property
    def model_bits_per_char(self) -> float:
        return self.model_bits / self.characters if self.characters else math.nan

    @property
    def reference_bits_per_char(self) -> float:
        return self.reference_bits / self.characters if self.characters else math.nan

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "model_bits_per_char": self.model_bits_per_char,
            "reference_bits_per_char": self.reference_bits_per_char,
        }


@torch.no_grad()
def score_tokens(
    model, tok, texts: list[str], *, max_length: int | None = None
) -> list[ScoredText]:
    """Every token of every text with the bits ``model`` spends on it, each text on its own,
    laid out as ``eval run`` lays it out (:mod:`llamaforge_eval.windows`: after the start
    token, in windows of ``max_length`` that overlap by one token — by default the model's
    context, ``max_position_embeddings``, as ``eval run`` takes it)."""
    if max_length is None:
        max_length = getattr(model.config, "max_position_embeddings", 2048)
    if not getattr(tok, "is_fast", False):
        raise EvalError("token attribution needs a fast tokenizer (character offsets)")
    device = next(model.parameters()).device
    out = []
    for text in texts:
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = list(enc.input_ids)
        full, front = with_start(tok, ids)
        scored_full = [math.nan] * len(full)
        for lo, hi in windows(len(full), max_length):
            chunk = torch.tensor([full[lo:hi]], device=device)
            logits = model(input_ids=chunk).logits[0].float()
            nll = F.cross_entropy(logits[:-1], chunk[0, 1:], reduction="none")
            scored_full[lo + 1 : hi] = (nll / math.log(2)).tolist()
        starts = [s for s, _ in enc.offset_mapping]
        ends = [e for _, e in enc.offset_mapping]
        out.append(ScoredText(ids=ids, starts=starts, ends=ends, bits=scored_full[front:]))
    return out


def kind_of(token_id: int, characters: int, first_new: int) -> str:
    """The kind of an expanded model's token (see :data:`KINDS`)."""
    if token_id < first_new:
        return KINDS[0]
    return KINDS[min(max(characters, 1), 3)]


def compare_by_kind(
    reference: list[ScoredText], model: list[ScoredText], first_new: int
) -> list[KindRow]:
    """Per kind of ``model``'s tokens: the bits ``model`` and ``reference`` spent on the same
    characters of the same documents (``reference[i]`` and ``model[i]`` score one text).

    Tokens that end at the same character (the bytes of one character, where a byte-level
    tokenizer spells it in several tokens) form one span, and a span's characters are those
    since the previous span ended, so the spans of a document cover it once."""
    if len(reference) != len(model):
        raise EvalError("the two models scored different numbers of documents")
    totals = {k: [0, 0, 0.0, 0.0] for k in KINDS}  # tokens, characters, model, reference
    for ref, new in zip(reference, model, strict=True):
        spans, where = _spans(new)
        first = {}  # span -> the first token ending there
        own = [0.0] * len(spans)
        carried = [0.0] * len(spans)
        count = [0] * len(spans)
        for k, (at, b, c) in enumerate(zip(where, new.bits, carried_bits(ref, new), strict=True)):
            first.setdefault(at, k)
            own[at] += b
            carried[at] += c
            count[at] += 1
        for at, end in enumerate(spans):
            if math.isnan(own[at]) or math.isnan(carried[at]):
                continue  # NaN: a token one of the models did not score
            chars = end - (spans[at - 1] if at else 0)
            k = first[at]
            row = totals[kind_of(new.ids[k], new.ends[k] - new.starts[k], first_new)]
            row[0] += count[at]
            row[1] += chars
            row[2] += own[at]
            row[3] += carried[at]
    return [KindRow(k, t, c, m, r) for k, (t, c, m, r) in totals.items() if t]


def carried_bits(reference: ScoredText, model: ScoredText) -> list[float]:
    """For each of ``model``'s tokens, the bits ``reference`` (the same text, another
    tokenizer) spent on its characters: the reference tokens that end after the previous span
    of ``model`` and by the end of this one (a reference token past the last span counts to
    it). Tokens of ``model`` that end at the same character form one span, carried by its
    first token (the others get 0)."""
    spans, where = _spans(model)
    if not spans:
        return []
    per_span = [0.0] * len(spans)
    for end, b in zip(reference.ends, reference.bits, strict=True):
        per_span[min(bisect.bisect_left(spans, end), len(spans) - 1)] += b
    out, done = [], set()
    for at in where:
        out.append(0.0 if at in done else per_span[at])
        done.add(at)
    return out


def _spans(model: ScoredText) -> tuple[list[int], list[int]]:
    """The distinct character offsets where ``model``'s tokens end, in order, and for each
    token the index of its span among them."""
    spans = sorted(set(model.ends))
    return spans, [bisect.bisect_left(spans, end) for end in model.ends]


def total_row(rows: list[KindRow]) -> KindRow:
    """The kinds summed: both models' bits per character on every character compared."""
    return KindRow(
        "all",
        sum(r.tokens for r in rows),
        sum(r.characters for r in rows),
        sum(r.model_bits for r in rows),
        sum(r.reference_bits for r in rows),
    )


def first_new_id(model_dir: Path) -> int:
    """The first row a vocabulary expansion added, from the model's ``config.json``."""
    cfg = json.loads((Path(model_dir) / "config.json").read_text())
    first = cfg.get("expanded_from_vocab_size")
    if not isinstance(first, int):
        raise EvalError(
            f"{model_dir}: config.json names no expanded_from_vocab_size (not a model made by "
            "`llamaforge vocab init-model`, or trained from one)"
        )
    return first


def where_bits(
    reference_dir: str | Path,
    model_dir: str | Path,
    texts: list[str],
    *,
    device: str = "auto",
    dtype: str = "auto",
) -> list[KindRow]:
    """:func:`compare_by_kind` for two HF model dirs on ``texts`` (one model in memory at a
    time); ``model_dir`` is the expanded model."""
    from llamaforge_eval.runner import load_model

    first_new = first_new_id(Path(model_dir))
    scored = []
    for path in (reference_dir, model_dir):
        model, tok = load_model(path, device=device, dtype=dtype)
        scored.append(score_tokens(model, tok, texts))
        del model
    return compare_by_kind(scored[0], scored[1], first_new)
