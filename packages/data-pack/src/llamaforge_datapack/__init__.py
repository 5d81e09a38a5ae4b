"""Tokenise pretraining and SFT data and pack it into fixed-length rows: no token lost, document
boundaries kept (so attention can stay inside documents), rows ordered in category buckets."""

from llamaforge_datapack.binpack import best_fit_decreasing
from llamaforge_datapack.errors import DataPackError
from llamaforge_datapack.loader import (
    ResumableSampler,
    collate_packed,
    load_packed,
    position_ids_from_lengths,
)
from llamaforge_datapack.manifest import Manifest
from llamaforge_datapack.pack import PackConfig, Source, pack
from llamaforge_datapack.records import OnError, read_records
from llamaforge_datapack.tokenize import TokenizeConfig, tokenizer_fingerprint

__version__ = "0.1.0"

__all__ = [
    "DataPackError",
    "Manifest",
    "OnError",
    "PackConfig",
    "ResumableSampler",
    "Source",
    "TokenizeConfig",
    "__version__",
    "best_fit_decreasing",
    "collate_packed",
    "load_packed",
    "pack",
    "position_ids_from_lengths",
    "read_records",
    "tokenizer_fingerprint",
]
