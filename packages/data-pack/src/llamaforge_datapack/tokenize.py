"""Turn records into token ids and labels with any HF tokenizer dir; optionally in processes.

Pretraining: ``bos + source + target + eos`` (each configurable), labels -100 over the source
part. Text: ``bos + text + eos``, all learned. SFT: the chosen chat template, labels on assistant
content and its end token; a conversation longer than ``max_length`` is cut after the last whole
exchange that fits (counted), or dropped when even its first exchange does not fit (counted).
Workers are given records in order and results come back in order, so output is deterministic
whatever ``num_proc`` is.
"""

from __future__ import annotations

import hashlib
import multiprocessing
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llamaforge_datapack.errors import DataPackError
from llamaforge_datapack.records import Record
from llamaforge_datapack.templates import (
    TEMPLATES,
    TOKENIZER_TEMPLATE,
    Segment,
    check_template,
    segments_from_tokenizer,
)

IGNORE = -100
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


@dataclass(kw_only=True)
class TokenizeConfig:
    """How records become tokens."""

    tokenizer_dir: Path
    """An HF tokenizer dir (e.g. one written by ``llamaforge vocab expand``)."""
    max_length: int = 4096
    """Row length; SFT conversations are cut to fit it."""
    template: str = "chatml"
    """SFT chat template: llama2, llama3, chatml or tokenizer (its own chat_template)."""
    add_bos: bool | None = None
    """Start pretraining / text documents with BOS; None: as the tokenizer itself does."""
    add_eos: bool = True
    """End pretraining / text documents with the tokenizer's EOS token."""

    def __post_init__(self) -> None:
        self.tokenizer_dir = Path(self.tokenizer_dir)
        if self.max_length < 2:
            raise DataPackError(f"max_length must be at least 2, got {self.max_length}")
        check_template(self.template)


@dataclass
class Tokenized:
    """One record as tokens. ``kind`` tells the packer whether it may be split."""

    input_ids: np.ndarray  # int32
    labels: np.ndarray  # int32, IGNORE where not learned
    category: str
    kind: str
    truncated: bool = False  # SFT: turns after the last fitting exchange were cut
    dropped: bool = False  # SFT: not even one exchange fits
    origin: str = ""  # the record's "file:line"


def tokenizer_fingerprint(tokenizer_dir: Path) -> str:
    """sha256 over the tokenizer's files, to tell whether two packed dirs can be mixed."""
    digest = hashlib.sha256()
    for name in TOKENIZER_FILES:
        path = Path(tokenizer_dir) / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def load_tokenizer(tokenizer_dir: Path):
    """An HF tokenizer from ``tokenizer_dir`` with a clear error when it is not one."""
    from transformers import AutoTokenizer

    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir() or not any(
        (tokenizer_dir / f).is_file() for f in TOKENIZER_FILES[:2]
    ):
        raise DataPackError(
            f"{tokenizer_dir}: not a tokenizer dir (no tokenizer.json or tokenizer.model)"
        )
    try:
        return AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except Exception as exc:  # noqa: BLE001 - transformers raises many kinds
        raise DataPackError(f"{tokenizer_dir}: cannot load tokenizer ({exc})") from None


class Encoder:
    """Encodes records with one tokenizer and one configuration."""

    def __init__(self, config: TokenizeConfig):
        self.config = config
        self.tok = load_tokenizer(config.tokenizer_dir)
        add_bos = config.add_bos
        if add_bos is None:  # follow the tokenizer: LLaMA adds <s>, SmolLM2 adds nothing
            probe = self.tok("a").input_ids
            add_bos = bool(probe) and probe[0] == self.tok.bos_token_id
        self.bos = self.tok.bos_token_id if add_bos else None
        if config.add_bos and self.bos is None:
            raise DataPackError(
                f"{config.tokenizer_dir}: tokenizer has no bos token; "
                "pass --no-bos or fix the tokenizer"
            )
        self.eos = self.tok.eos_token_id if config.add_eos else None
        if config.add_eos and self.eos is None:
            raise DataPackError(
                f"{config.tokenizer_dir}: tokenizer has no eos token; "
                "pass --no-eos or fix the tokenizer"
            )
        self._special: dict[str, int] = {}

    def _text(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False) if text else []

    def _token(self, name: str) -> int:
        """The id of a template's special token ("bos", "eos" or a literal like <|im_end|>)."""
        if name not in self._special:
            if name in ("bos", "eos"):
                tid = self.tok.bos_token_id if name == "bos" else self.tok.eos_token_id
            else:
                ids = self._text(name)  # an added special token encodes to exactly one id
                tid = ids[0] if len(ids) == 1 else None
            if tid is None:
                raise DataPackError(
                    f"template {self.config.template!r} needs the token {name!r}, which "
                    f"{self.config.tokenizer_dir} does not have as a single token"
                )
            self._special[name] = tid
        return self._special[name]

    def encode(self, record: Record) -> Tokenized:
        if record.kind == "sft":
            return self._sft(record)
        source = self._text(record.source)
        target = self._text(record.target)
        head = [self.bos] if self.bos is not None else []
        tail = [self.eos] if self.eos is not None else []
        ids = head + source + target + tail
        labels = [IGNORE] * (len(head) + len(source)) + target + tail
        return Tokenized(
            np.asarray(ids, np.int32),
            np.asarray(labels, np.int32),
            record.category,
            record.kind,
            origin=record.origin,
        )

    def _segments(self, messages: list[tuple[str, str]]) -> list[Segment]:
        if self.config.template == TOKENIZER_TEMPLATE:
            return segments_from_tokenizer(self.tok, messages)
        return TEMPLATES[self.config.template](messages)

    def _sft(self, record: Record) -> Tokenized:
        messages = list(record.messages)
        try:
            segments = self._segments(messages)
        except DataPackError as exc:
            raise DataPackError(f"{record.origin}: {exc}") from None
        ids: list[int] = []
        labels: list[int] = []
        fits = 0  # length of the longest prefix that ends an assistant turn
        for seg in segments:
            piece = [self._token(seg.token)] if seg.token else self._text(seg.text)
            ids += piece
            labels += piece if seg.learn else [IGNORE] * len(piece)
            if seg.learn and len(ids) <= self.config.max_length:
                fits = len(ids)
        dropped = fits == 0 and len(ids) > self.config.max_length
        truncated = not dropped and len(ids) > self.config.max_length
        if truncated or dropped:
            ids, labels = ids[:fits], labels[:fits]
        return Tokenized(
            np.asarray(ids, np.int32),
            np.asarray(labels, np.int32),
            record.category,
            "sft",
            truncated=truncated,
            dropped=dropped,
            origin=record.origin,
        )


_WORKER: Encoder | None = None


def _init_worker(config: TokenizeConfig) -> None:
    global _WORKER  # one encoder per worker process, built once
    _WORKER = Encoder(config)


def _encode_batch(records: list[Record]) -> list[Tokenized]:
    assert _WORKER is not None
    return [_WORKER.encode(r) for r in records]


def encode_records(
    records: Iterable[Record], config: TokenizeConfig, *, num_proc: int = 1, batch_size: int = 256
) -> Iterator[Tokenized]:
    """Encode ``records`` in order; with ``num_proc`` > 1 in worker processes (same output)."""
    if num_proc <= 1:
        encoder = Encoder(config)
        for record in records:
            yield encoder.encode(record)
        return
    Encoder(config)  # fail fast in this process on a bad tokenizer or template
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(num_proc, initializer=_init_worker, initargs=(config,)) as pool:
        for batch in pool.imap(_encode_batch, _batches(records, batch_size)):
            yield from batch


def _batches(items: Iterable[Record], size: int) -> Iterator[list[Record]]:
    batch: list[Record] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
