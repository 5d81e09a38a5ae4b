"""Which old tokens spell each new token (the rows its embedding is initialised from)."""

from __future__ import annotations

import json
from pathlib import Path

from llamaforge_tokenizer.bpe import load_bpe_json
from llamaforge_tokenizer.errors import TokenizerExpandError
from llamaforge_tokenizer.segment import detect_kind
from llamaforge_tokenizer.spm import SPACE, load_model_proto


def old_vocab_size(tokenizer_dir: Path) -> int:
    """Number of ids in a tokenizer dir (special / added tokens included)."""
    if detect_kind(tokenizer_dir) == "sentencepiece":
        return len(load_model_proto(tokenizer_dir).pieces)
    data = load_bpe_json(tokenizer_dir)
    ids = [*data["model"]["vocab"].values(), *(t["id"] for t in data.get("added_tokens", []))]
    return max(ids) + 1


def subtoken_ids(old_dir: Path, new_dir: Path, first_new: int) -> tuple[list[list[int]], int]:
    """For every new id ≥ ``first_new``: the old ids its text splits into ([] = special).

    Returns the lists and the new vocabulary size. Raises when ``new_dir`` is not an
    expansion of ``old_dir`` (an old id changed meaning).
    """
    kind = detect_kind(new_dir)
    if kind != detect_kind(old_dir):
        raise TokenizerExpandError(f"{new_dir} and {old_dir} are different kinds of tokenizer")
    return (
        _spm(old_dir, new_dir, first_new)
        if kind == "sentencepiece"
        else _bpe(old_dir, new_dir, first_new)
    )


def _spm(old_dir: Path, new_dir: Path, first_new: int):
    import sentencepiece as spm

    old, new = load_model_proto(old_dir), load_model_proto(new_dir)
    for i, piece in enumerate(old.pieces):
        if i >= len(new.pieces) or new.pieces[i].piece != piece.piece:
            raise TokenizerExpandError(
                f"{new_dir} is not an expansion of {old_dir}: id {i} is "
                f"{new.pieces[i].piece if i < len(new.pieces) else 'missing'!r}, "
                f"was {piece.piece!r}"
            )
    old.normalizer_spec.add_dummy_prefix = False  # a piece is spelled exactly, no leading ▁
    sp = spm.SentencePieceProcessor(model_proto=old.SerializeToString())
    out = []
    for piece in new.pieces[first_new:]:
        out.append(sp.encode(piece.piece.replace(SPACE, " ")) if piece.type == 1 else [])
    return out, len(new.pieces)


def _bpe(old_dir: Path, new_dir: Path, first_new: int):
    from tokenizers import Tokenizer

    old_data, new_data = load_bpe_json(old_dir), load_bpe_json(new_dir)
    old_vocab, new_vocab = old_data["model"]["vocab"], new_data["model"]["vocab"]
    for token, i in old_vocab.items():
        if new_vocab.get(token) != i:
            raise TokenizerExpandError(
                f"{new_dir} is not an expansion of {old_dir}: {token!r} was id {i}"
            )
    old_tok = Tokenizer.from_str(json.dumps(old_data))
    by_id = {i: t for t, i in new_vocab.items()}
    size = max([*new_vocab.values(), *(t["id"] for t in new_data.get("added_tokens", []))]) + 1
    out = []
    for i in range(first_new, size):
        token = by_id.get(i)
        out.append([t.id for t in old_tok.model.tokenize(token)] if token is not None else [])
    return out, size
