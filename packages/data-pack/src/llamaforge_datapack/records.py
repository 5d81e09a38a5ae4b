"""Read pretraining and SFT records from jsonl / json / parquet files, dirs or globs.

Three schemas are understood, one per record:

* pretraining ``{"source": str, "target": str, "category"?: str}`` — ``source`` is context whose
  tokens are masked out of the labels (Colossal-LLaMA's format; ``source`` may be empty);
* plain ``{"text": str, "category"?: str}``;
* SFT ``{"messages": [{"from": "human"|"assistant"|"system", "content": str}, ...]}`` (``role``
  with ``user`` / ``assistant`` / ``system`` is accepted too).

A ``.txt`` file is plain text, one document per non-empty line.

A record that fits none is an error naming file, line and field; with ``on_error="skip"`` it is
counted instead and reading goes on.
"""

from __future__ import annotations

import glob
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

from llamaforge_datapack.errors import DataPackError

SUFFIXES = (".jsonl", ".json", ".parquet", ".txt")
ROLES = {
    "human": "user",
    "user": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "system": "system",
}


class OnError(str, Enum):
    """What to do with a record that fails validation."""

    FAIL = "fail"
    SKIP = "skip"


@dataclass(frozen=True)
class Record:
    """One validated input record."""

    kind: str  # "pretrain", "text" or "sft"
    category: str
    source: str = ""
    target: str = ""
    messages: tuple[tuple[str, str], ...] = ()  # (role, content), role in user/assistant/system
    origin: str = ""  # "file:line", for messages about this record


@dataclass
class ReadStats:
    """What the reader saw, for the manifest."""

    files: int = 0
    records: int = 0
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)


def expand_inputs(inputs: list[str | Path]) -> list[Path]:
    """Files named directly, found in dirs (recursively) or matched by globs, sorted, unique."""
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            files += sorted(p for p in path.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        elif path.is_file():
            files.append(path)
        else:
            matched = sorted(Path(p) for p in glob.glob(str(item), recursive=True))
            if not matched:
                raise DataPackError(f"{item}: no such file, dir or matching glob")
            files += [p for p in matched if p.is_file()]
    unique = list(dict.fromkeys(files))
    for path in unique:
        if path.suffix not in SUFFIXES:
            raise DataPackError(
                f"{path}: unsupported file type (use .jsonl, .json, .parquet or .txt)"
            )
    return unique


@dataclass(frozen=True)
class FileBlock:
    """A stretch of one input file, read on its own: lines ``first_line`` … ``first_line +
    lines - 1`` starting at byte ``start`` of a ``.jsonl`` / ``.txt`` file, or (``lines`` 0)
    the whole of a ``.json`` / ``.parquet`` file."""

    path: Path
    start: int = 0
    first_line: int = 1
    lines: int = 0


def split_file(path: Path, block_lines: int, *, chunk: int = 1 << 24) -> list[FileBlock]:
    """``path`` as blocks of ``block_lines`` lines (one block for .json / .parquet): one pass
    over the bytes, counting newlines."""
    if path.suffix not in (".jsonl", ".txt"):
        return [FileBlock(path)]
    blocks: list[FileBlock] = []
    start, first, line, offset = 0, 1, 1, 0
    try:
        with path.open("rb") as fh:
            while data := fh.read(chunk):
                at = 0
                while (nl := data.find(b"\n", at)) != -1:
                    line += 1
                    at = nl + 1
                    if line - first == block_lines:
                        blocks.append(FileBlock(path, start, first, block_lines))
                        start, first = offset + at, line
                offset += len(data)
    except OSError as exc:
        raise DataPackError(f"{path}: cannot open ({exc.strerror})") from None
    if offset > start:  # a last stretch (with or without a final newline)
        blocks.append(FileBlock(path, start, first, line - first + 1))
    return blocks or [FileBlock(path, 0, 1, 1)]


def _raw_records(path: Path, block: FileBlock | None = None) -> Iterator[tuple[int, object]]:
    """(line or row number, parsed object); a malformed JSON line yields a DataPackError.
    With ``block``, only the lines of that block of a .jsonl / .txt file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds
            raise DataPackError(f"{path}: not a readable parquet file ({exc})") from None
        row = 0
        for batch in table.iter_batches(batch_size=4096):
            for rec in batch.to_pylist():
                row += 1
                yield row, rec
        return
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise DataPackError(f"{path}: cannot open ({exc.strerror})") from None
    with handle:
        if path.suffix == ".json":
            try:
                data = json.loads(handle.read().decode("utf-8"))
            except UnicodeDecodeError as exc:
                raise DataPackError(f"{path}: not UTF-8 ({exc.reason})") from None
            except json.JSONDecodeError as exc:
                raise DataPackError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg})") from None
            if not isinstance(data, list):
                raise DataPackError(f"{path}: a .json file must hold a list of records")
            yield from enumerate(data, start=1)
            return
        lines: Iterator[bytes] = handle
        first = 1
        if block is not None and block.lines:
            handle.seek(block.start)
            lines, first = itertools.islice(handle, block.lines), block.first_line
        for lineno, raw in enumerate(lines, start=first):  # bytes, so errors know their line
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataPackError(f"{path}:{lineno}: not UTF-8 ({exc.reason})") from None
            if not line.strip():
                continue
            if path.suffix == ".txt":
                yield lineno, {"text": line.rstrip("\r\n")}
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as exc:
                yield lineno, DataPackError(f"{path}:{lineno}: malformed JSON ({exc.msg})")


def _field_str(obj: dict, name: str, where: str, *, required: bool = True) -> str:
    if name not in obj:
        if required:
            raise DataPackError(f"{where}: missing field {name!r}")
        return ""
    value = obj[name]
    if not isinstance(value, str):
        raise DataPackError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
    return value


def parse_record(obj: object, where: str, default_category: str) -> Record:
    """Validate one parsed record; raise :class:`DataPackError` naming ``where`` and the field."""
    if not isinstance(obj, dict):
        raise DataPackError(f"{where}: a record must be a JSON object, got {type(obj).__name__}")
    category = _field_str(obj, "category", where, required=False) or default_category
    if "messages" in obj or "conversations" in obj:
        key = "messages" if "messages" in obj else "conversations"
        turns = obj[key]
        if not isinstance(turns, list) or not turns:
            raise DataPackError(f"{where}: field {key!r} must be a non-empty list")
        messages = []
        for k, turn in enumerate(turns):
            at = f"{where}: field '{key}[{k}]'"
            if not isinstance(turn, dict):
                raise DataPackError(f"{at} must be an object")
            role_key = "from" if "from" in turn else "role"
            role = turn.get(role_key)
            if role not in ROLES:
                raise DataPackError(
                    f"{at}.{role_key}: unknown role {role!r} (use human, assistant or system)"
                )
            content = turn.get("content", turn.get("value"))
            if not isinstance(content, str):
                raise DataPackError(f"{at}.content must be a string")
            messages.append((ROLES[role], content))
        if not any(r == "assistant" for r, _ in messages):
            raise DataPackError(f"{where}: field {key!r} has no assistant turn to learn from")
        return Record("sft", category, messages=tuple(messages), origin=where)
    if "target" in obj or "source" in obj:
        source = _field_str(obj, "source", where, required=False)
        target = _field_str(obj, "target", where)
        if not (source + target).strip():
            raise DataPackError(f"{where}: fields 'source' and 'target' are both empty")
        return Record("pretrain", category, source=source, target=target, origin=where)
    if "text" in obj:
        text = _field_str(obj, "text", where)
        if not text.strip():
            raise DataPackError(f"{where}: field 'text' is empty")
        return Record("text", category, target=text, origin=where)
    raise DataPackError(
        f"{where}: no known fields (expected 'text', 'source'/'target' or 'messages')"
    )


def read_records(
    inputs: list[str | Path],
    *,
    on_error: OnError = OnError.FAIL,
    stats: ReadStats | None = None,
    default_category: str | None = None,
) -> Iterator[Record]:
    """Stream validated records from ``inputs`` in a deterministic order (sorted files, lines).

    Args:
        inputs: files, dirs or globs.
        on_error: ``fail`` raises on the first bad record; ``skip`` counts it in ``stats``.
        stats: filled with counts as reading goes.
        default_category: category of records without one (default: the file's stem).
    """
    stats = stats if stats is not None else ReadStats()
    files = expand_inputs(inputs)
    if not files:
        raise DataPackError("no input files")
    for path in files:
        stats.files += 1
        before = stats.records + stats.skipped
        yield from read_block(
            FileBlock(path), on_error=on_error, stats=stats, default_category=default_category
        )
        if stats.records + stats.skipped == before:
            raise DataPackError(f"{path}: empty file (no records)")


def read_block(
    block: FileBlock,
    *,
    on_error: OnError = OnError.FAIL,
    stats: ReadStats,
    default_category: str | None = None,
) -> Iterator[Record]:
    """Stream the validated records of one block (see :func:`read_records`), counting each
    in ``stats`` (as read or as skipped)."""
    category = default_category or block.path.stem
    for number, obj in _raw_records(block.path, block):
        try:
            if isinstance(obj, DataPackError):
                raise obj
            record = parse_record(obj, f"{block.path}:{number}", category)
        except DataPackError as exc:
            if on_error is OnError.FAIL:
                raise
            stats.skipped += 1
            if len(stats.skipped_examples) < 20:
                stats.skipped_examples.append(str(exc))
            continue
        stats.records += 1
        yield record
