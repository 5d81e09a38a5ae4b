"""The manifest of a packed dir (``manifest.json``): format and version, the settings it was
packed with, and every count — documents, splits, skipped and dropped records, rows, tokens."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llamaforge_datapack.errors import DataPackError

FORMAT, VERSION = "llamaforge-packed", 1


@dataclass
class Manifest:
    """What a packed dir holds; written as ``manifest.json``."""

    format: str = FORMAT
    version: int = VERSION
    tokenizer: str = ""
    tokenizer_sha256: str = ""
    max_length: int = 0
    template: str = ""
    bos: bool | None = None
    """Whether text documents start with BOS (None: a manifest older than this field)."""
    eos: bool | None = None
    """Whether text documents end with EOS."""
    seed: int = 0
    num_bins: int = 1
    sources: dict[str, float] = field(default_factory=dict)
    files: int = 0
    records: int = 0
    skipped_records: int = 0
    skipped_examples: list[str] = field(default_factory=list)
    documents: int = 0
    split_documents: int = 0
    segments: int = 0
    truncated_conversations: int = 0
    dropped_conversations: int = 0
    rows: int = 0
    tokens: int = 0
    label_tokens: int = 0
    tokens_per_category: dict[str, int] = field(default_factory=dict)
    rows_per_category: dict[str, int] = field(default_factory=dict)
    fill_ratio: float = 0.0
    shards: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def read(cls, folder: Path) -> Manifest:
        path = Path(folder) / "manifest.json"
        if not path.is_file():
            raise DataPackError(f"{folder}: no manifest.json (not a packed dataset dir)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataPackError(f"{path}: corrupt manifest ({exc}); pack the data again") from None
        if not isinstance(data, dict):
            raise DataPackError(f"{path}: corrupt manifest (not a JSON object)")
        if data.get("format") != FORMAT or data.get("version") != VERSION:
            raise DataPackError(
                f"{folder}: format {data.get('format')} v{data.get('version')}, "
                f"expected {FORMAT} v{VERSION}"
            )
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})
