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
        """Every chunk of ``lines``, counted."""
        return self._impl.count_chunks(lines)

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

    def count_chunks(self, lines: Iterable[str]) -> Counter[Chunk]:
        out: Counter[Chunk] = Counter()
        for line in lines:
            for chunk in self._chunks(self.sp.encode(line, out_type=str)):
                out[chunk] += 1
        return out

    def _chunks(self, pieces: list[str]):
        units: list[tuple[str, int]] = []
        pending = b""
        for piece in pieces:
            if piece.startswith("<0x") and piece.endswith(">") and len(piece) == 6:
                pending += bytes([int(piece[3:5], 16)])
                text = pending.decode("utf-8", errors="ignore")
                if text and text.encode("utf-8") == pending:
                    units.extend((ch, len(ch.encode("utf-8"))) for ch in text)
                    pending = b""
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

    def count_chunks(self, lines: Iterable[str]) -> Counter[Chunk]:
        # A chunk depends only on its pre-tokenized word, so each distinct word is tokenized once.
        pre = self.tok.pre_tokenizer
        words: Counter[str] = Counter()
        for line in lines:
            if pre is None:
                words[line] += 1
            else:
                words.update(word for word, _ in pre.pre_tokenize_str(line))
        out: Counter[Chunk] = Counter()
        for word, n in words.items():
            out[self._chunk(word)] += n
        return out

    def _chunk(self, word: str) -> Chunk:
        """The units of one pre-tokenized word: its tokens, except that tokens holding part of a
        character are joined until the character is whole."""
        raw = self._bytes(word)  # one byte per character of a byte-level string
        units: list[tuple[str, int]] = []
        start = end = count = 0
        for token in self.tok.model.tokenize(word):
            end += len(token.value)
            count += 1
            if end < len(raw) and 0x80 <= raw[end] < 0xC0:
                continue  # the next byte continues a character this token began
            units.append((word[start:end], count))
            start, count = end, 0
        if count:
            units.append((word[start:], count))
        return _freeze(units)

    def text(self, unit: str) -> str | None:
        try:
            return self._bytes(unit).decode("utf-8")
        except (UnicodeDecodeError, KeyError):
            return None


def _freeze(units: list[tuple[str, int]]) -> Chunk:
    return tuple(u for u, _ in units), tuple(c for _, c in units)
