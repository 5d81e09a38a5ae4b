"""Expand a sentencepiece (LLaMA / LLaMA-2 style BPE) tokenizer with new pieces.

Why the scores matter: sentencepiece's BPE merges the adjacent pair whose concatenation has the
highest score, while the fast ``tokenizer.json`` that transformers derives from the model ranks its
merges by the same scores but breaks ties differently. Colossal-LLaMA appends every piece with
score 0 — higher than all of LLaMA's (negative) scores and all tied — so the slow and fast
tokenizers disagree on ordinary Chinese text. Here every new piece gets a distinct score below
all existing ones, strictly decreasing in id order: new merges rank after all old merges (old
text encodes as before) and both implementations agree on the order.

A piece that no pair of existing pieces can build would never be produced by BPE; the pieces it
needs (its prefix and its last character) are added first and counted as intermediates.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from llamaforge_tokenizer.errors import TokenizerExpandError
from llamaforge_tokenizer.outdir import atomic_output_dir
from llamaforge_tokenizer.report_types import ExpandReport

SPACE = "\u2581"  # sentencepiece's visible space
RESERVED = "<|reserved_{}|>"
_NORMAL, _CONTROL = 1, 3


def load_model_proto(tokenizer_dir: Path):
    """Parse ``tokenizer.model`` in ``tokenizer_dir`` into a sentencepiece ModelProto."""
    from sentencepiece import sentencepiece_model_pb2 as sp_pb2

    path = Path(tokenizer_dir) / "tokenizer.model"
    if not path.is_file():
        raise TokenizerExpandError(f"{tokenizer_dir}: no tokenizer.model (not a sentencepiece dir)")
    proto = sp_pb2.ModelProto()
    try:
        proto.ParseFromString(path.read_bytes())
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError family
        raise TokenizerExpandError(f"{path}: corrupt sentencepiece model ({exc})") from None
    if len(proto.pieces) == 0:
        raise TokenizerExpandError(f"{path}: corrupt sentencepiece model (no pieces)")
    if proto.trainer_spec.model_type != proto.trainer_spec.BPE:
        raise TokenizerExpandError(f"{path}: only BPE-type sentencepiece models can be expanded")
    return proto


def to_piece(text: str) -> str:
    """A piece as sentencepiece spells it (spaces become ``▁``)."""
    return text.replace(" ", SPACE)


class _Vocab:
    """Pieces being appended to a ModelProto, with scores below every existing one."""

    def __init__(self, proto):
        self.proto = proto
        self.index = {p.piece: i for i, p in enumerate(proto.pieces)}
        # Scores are float32: below LLaMA's lowest score (-1e9, its "▁▁" piece) consecutive
        # integers are not representable, and equal scores would let the slow and fast
        # tokenizers break ties differently. Step by a power of two at least twice the float32
        # spacing at twice that magnitude, so millions of new scores stay distinct.
        low = min((p.score for p in proto.pieces), default=0.0)
        _, exponent = math.frexp(2.0 * abs(low) + 1.0)
        self.step = max(1.0, 2.0 ** (exponent - 23))
        self.next_score = math.floor(low) - self.step

    def __contains__(self, piece: str) -> bool:
        return piece in self.index

    def add(self, piece: str, kind: int = _NORMAL) -> None:
        self.proto.pieces.add(piece=piece, score=self.next_score, type=kind)
        self.index[piece] = len(self.proto.pieces) - 1
        self.next_score -= self.step

    def buildable(self, piece: str) -> bool:
        return any(piece[:k] in self and piece[k:] in self for k in range(1, len(piece)))

    def ensure(self, piece: str) -> int:
        """Add ``piece`` and whatever it needs; return how many intermediates were added."""
        if piece in self:
            return 0
        extra = 0
        if len(piece) > 1 and not self.buildable(piece):
            for part in (piece[:-1], piece[-1]):
                if part not in self:
                    extra += self.ensure(part) + 1
        self.add(piece)
        return extra


def expand_sentencepiece(
    tokenizer_dir: Path,
    pieces: list[str],
    out_dir: Path,
    *,
    pad_to: int = 64,
    overwrite: bool = False,
    duplicates: int = 0,
) -> ExpandReport:
    """Append ``pieces`` to a sentencepiece tokenizer and write a complete HF tokenizer dir.

    Args:
        tokenizer_dir: dir with ``tokenizer.model`` (and optionally HF config files).
        pieces: new pieces in priority order (learned lists: the order they were learned).
        out_dir: output dir: ``tokenizer.model``, ``tokenizer.json``, ``tokenizer_config.json``,
            ``special_tokens_map.json``.
        pad_to: pad the vocabulary with reserved control pieces to a multiple of this (1: none).
        overwrite: replace an existing ``out_dir``.
        duplicates: duplicates already dropped by the reader, carried into the report.
    """
    if pad_to < 1:
        raise TokenizerExpandError(f"pad_to must be at least 1, got {pad_to}")
    proto = load_model_proto(tokenizer_dir)
    vocab = _Vocab(proto)
    report = ExpandReport(
        kind="sentencepiece", old_size=len(proto.pieces), new_size=0, duplicates=duplicates
    )
    for text in pieces:
        piece = to_piece(text)
        if piece in vocab:
            report.already_present += 1
            continue
        report.intermediates += vocab.ensure(piece)
        report.added += 1
    k = 0
    while len(proto.pieces) % pad_to:
        name = RESERVED.format(k)
        k += 1
        if name not in vocab:
            vocab.add(name, kind=_CONTROL)
            report.reserved += 1
    proto.trainer_spec.vocab_size = len(proto.pieces)
    report.new_size = len(proto.pieces)
    with atomic_output_dir(
        out_dir, overwrite=overwrite, inputs=[tokenizer_dir], kind="tokenizer"
    ) as tmp:
        _write_hf_dir(Path(tokenizer_dir), proto, tmp)
    return report


def _write_hf_dir(src: Path, proto, out: Path) -> None:
    (out / "tokenizer.model").write_bytes(proto.SerializeToString())
    config = {}
    if (src / "tokenizer_config.json").is_file():
        config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    config.pop("added_tokens_decoder", None)
    config.setdefault("tokenizer_class", "LlamaTokenizer")
    # legacy=True: every text segment is encoded as raw sentencepiece does (dummy prefix included),
    # which the fast converter reproduces exactly; the non-legacy fast path drops a space of
    # text that starts with spaces.
    config["legacy"] = True
    config.pop("tokenizer_file", None)
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    if (src / "special_tokens_map.json").is_file():
        shutil.copyfile(src / "special_tokens_map.json", out / "special_tokens_map.json")
    _write_fast(out)


def _write_fast(out: Path) -> None:
    """Derive ``tokenizer.json`` from the slow tokenizer (transformers' own converter)."""
    from transformers import LlamaTokenizer, LlamaTokenizerFast

    slow = LlamaTokenizer.from_pretrained(str(out), legacy=True)
    fast = LlamaTokenizerFast.from_pretrained(str(out), from_slow=True, legacy=True)
    slow.save_pretrained(str(out))
    fast.save_pretrained(str(out))
    # The fast class saves add_prefix_space=null, which would make the slow class drop the
    # leading "▁" (and a non-null value makes the fast class re-convert on every load): leave
    # the key out so each class uses its own default, which agree.
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.pop("add_prefix_space", None)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
