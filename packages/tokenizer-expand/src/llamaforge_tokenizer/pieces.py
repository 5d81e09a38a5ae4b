"""Read and validate a list of new pieces (jsonl ``{"piece": ...}`` or one piece per line).

Invalid lines are rejected with their file and line number; duplicates are skipped and counted,
so the caller can report exactly what happened to every input line.
"""

from __future__ import annotations

import json
import os
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from llamaforge_tokenizer.errors import TokenizerExpandError

DEFAULT_MAX_PIECE_CHARS = 16


@dataclass(kw_only=True)
class PieceList:
    """New pieces in file order, with what happened to the other lines."""

    pieces: list[str] = field(default_factory=list)
    """Valid, unique pieces in the order they were read."""
    duplicates: int = 0
    """Lines repeating a piece seen earlier in the file."""
    blank_lines: int = 0
    """Empty lines (ignored)."""


def read_utf8(path: Path) -> str:
    """A text file's content; a missing file or a non-UTF-8 byte is named with its line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        raise TokenizerExpandError(f"{path}: no such file") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise TokenizerExpandError(f"{path}:{line}: not UTF-8 ({exc.reason})") from None


def validate_piece(piece: object, max_chars: int = DEFAULT_MAX_PIECE_CHARS) -> str | None:
    """Why ``piece`` cannot be a vocabulary piece, or None when it can."""
    if not isinstance(piece, str):
        return f"piece must be a string, got {type(piece).__name__}"
    if piece == "":
        return "piece is empty"
    if piece.strip() == "":
        return "piece is only whitespace"
    if len(piece) > max_chars:
        return f"piece has {len(piece)} characters, more than the limit of {max_chars}"
    for ch in piece:
        if unicodedata.category(ch) in {"Cc", "Cf", "Cs", "Co", "Cn"}:
            return f"piece contains the control/format character U+{ord(ch):04X}"
    return None


def read_pieces(path: Path, *, max_chars: int = DEFAULT_MAX_PIECE_CHARS) -> PieceList:
    """Read pieces from ``path``: ``.jsonl`` lines ``{"piece": ...}``, anything else plain text.

    Raises:
        TokenizerExpandError: unreadable or non-UTF-8 file, malformed JSON, missing ``piece``
            field, or an invalid piece — naming the file and line.
    """
    path = Path(path)
    text = read_utf8(path)
    is_jsonl = path.suffix in {".jsonl", ".json"}
    out = PieceList()
    seen: set[str] = set()
    for lineno, raw in enumerate(text.splitlines(), start=1):
        if raw.strip() == "" and is_jsonl:
            out.blank_lines += 1
            continue
        if is_jsonl:
            piece = _piece_from_json(path, lineno, raw)
        else:
            piece = raw.rstrip("\r")
            if piece == "":
                out.blank_lines += 1
                continue
        problem = validate_piece(piece, max_chars)
        if problem:
            raise TokenizerExpandError(f"{path}:{lineno}: field 'piece': {problem}")
        if piece in seen:
            out.duplicates += 1
            continue
        seen.add(piece)
        out.pieces.append(piece)
    return out


def _piece_from_json(path: Path, lineno: int, raw: str) -> object:
    try:
        record = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise TokenizerExpandError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
    if not isinstance(record, dict) or "piece" not in record:
        raise TokenizerExpandError(f"{path}:{lineno}: missing field 'piece'")
    return record["piece"]


def write_pieces(path: Path, rows: list[dict]) -> None:
    """Write reviewable jsonl: one ``{"piece": ..., ...}`` object per line. The file appears
    whole or not at all (written to a temporary sibling, then renamed)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as fh:
            for row in rows:
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
