"""Segment text the way the current tokenizer does, as units a vocabulary learner can merge.

A *unit* is one current token, or — where the tokenizer falls back to bytes inside a character —
the whole character(s) those byte tokens spell, with the number of tokens it costs now. Units are
grouped into *chunks* that no merge may cross (sentencepiece: a new word starts at ``▁``;
byte-level BPE: the pre-tokenizer's boundaries). Identical chunks are counted once with a weight.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from llamaforge_tokenizer.bpe import byte_to_unicode, load_bpe_json
from llamaforge_tokenizer.errors import TokenizerExpandError
from llamaforge_tokenizer.spm import SPACE, load_model_proto

Chunk = tuple[tuple[str, ...], tuple[int, ...]]  # unit strings, their costs in tokens


@dataclass(frozen=True)
class Segmenter:
    """Turns text into weighted chunks of units, and unit strings back into text."""

    kind: str
    """``sentencepiece`` or ``bpe``."""
    vocab: frozenset[str]
    """Strings that are (mergeable) vocabulary entries."""
    _impl: object

    def chunks(self, lines: Iterable[str]) -> Counter[Chunk]:
        out: Counter[Chunk] = Counter()
        for line in lines:
            for chunk in self._impl.chunks(line):
                out[chunk] += 1
        return out

    def text(self, unit: str) -> str | None:
        """The plain text a unit spells, or None when it is not whole characters."""
        return self._impl.text(unit)


def detect_kind(tokenizer_dir: Path) -> str:
    """``bpe`` for a byte-level BPE ``tokenizer.json``, else ``sentencepiece`` when a
    ``tokenizer.model`` is present (its ``tokenizer.json``, if any, is derived from it)."""
    tokenizer_dir = Path(tokenizer_dir)
    fast = tokenizer_dir / "tokenizer.json"
    if fast.is_file() and _is_byte_level(fast):
        return "bpe"
    if (tokenizer_dir / "tokenizer.model").is_file():
        return "sentencepiece"
    if fast.is_file():
        raise TokenizerExpandError(
            f"{fast}: neither byte-level BPE nor backed by a "
            "tokenizer.model; this kind of tokenizer is not supported"
        )
    if not tokenizer_dir.is_dir():
        raise TokenizerExpandError(f"{tokenizer_dir}: no such tokenizer dir")
    raise TokenizerExpandError(f"{tokenizer_dir}: neither tokenizer.model nor tokenizer.json found")


def _is_byte_level(path: Path) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TokenizerExpandError(f"{path}: corrupt tokenizer.json ({exc})") from None
    return (data.get("model") or {}).get("type") == "BPE" and "ByteLevel" in json.dumps(
        data.get("pre_tokenizer")
    )


def load_segmenter(tokenizer_dir: Path) -> Segmenter:
    """A segmenter for the tokenizer in ``tokenizer_dir`` (kind detected from its files)."""
    kind = detect_kind(tokenizer_dir)
    impl = _SpmImpl(tokenizer_dir) if kind == "sentencepiece" else _BpeImpl(tokenizer_dir)
    return Segmenter(kind=kind, vocab=frozenset(impl.vocab), _impl=impl)


class _SpmImpl:
    def __init__(self, tokenizer_dir: Path):
        import sentencepiece as spm

        proto = load_model_proto(tokenizer_dir)
        self.vocab = {p.piece for p in proto.pieces if p.type == 1}
        self.sp = spm.SentencePieceProcessor(model_proto=proto.SerializeToString())

    def chunks(self, line: str):
        units: list[tuple[str, int]] = []
        pending = b""
        pending_tokens = 0
        for piece in self.sp.encode(line, out_type=str):
            if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
                pending += bytes([int(piece[3:5], 16)])
                pending_tokens += 1
                text = pending.decode("utf-8", errors="ignore")
                if text and text.encode("utf-8") == pending:
                    units.extend((ch, len(ch.encode("utf-8"))) for ch in text)
                    pending, pending_tokens = b"", 0
                continue
            units.append((piece, 1))
        chunk: list[tuple[str, int]] = []
        for unit in units:
            if unit[0].startswith(SPACE) and chunk:
                yield _freeze(chunk)
                chunk = []
            chunk.append(unit)
        if chunk:
            yield _freeze(chunk)

    def text(self, unit: str) -> str | None:
        return unit.replace(SPACE, " ")


class _BpeImpl:
    def __init__(self, tokenizer_dir: Path):
        from tokenizers import Tokenizer

        data = load_bpe_json(tokenizer_dir)
        self.tok = Tokenizer.from_str(json.dumps(data))
        self.vocab = set(data["model"]["vocab"])
        self.decode_map = {c: b for b, c in byte_to_unicode().items()}

    def _bytes(self, unit: str) -> bytes:
        return bytes(self.decode_map[c] for c in unit)

    def chunks(self, line: str):
        pre = self.tok.pre_tokenizer
        parts = pre.pre_tokenize_str(line) if pre is not None else [(line, None)]
        for word, _ in parts:
            units: list[tuple[str, int]] = []
            pending, count = "", 0
            for token in self.tok.model.tokenize(word):
                pending += token.value
                count += 1
                try:
                    self._bytes(pending).decode("utf-8")
                except UnicodeDecodeError:
                    continue
                units.append((pending, count))
                pending, count = "", 0
            if pending:
                units.append((pending, count))
            yield _freeze(units)

    def text(self, unit: str) -> str | None:
        try:
            return self._bytes(unit).decode("utf-8")
        except (UnicodeDecodeError, KeyError):
            return None


def _freeze(units: list[tuple[str, int]]) -> Chunk:
    return tuple(u for u, _ in units), tuple(c for _, c in units)
