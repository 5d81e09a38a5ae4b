"""Real models, tokenizers and corpora from package-registry distributions, cached and verified."""

from llamaforge_cli.assets.cache import (
    asset_dir,
    asset_names,
    cache_root,
    ensure_asset,
    get_spec,
    verify_asset,
)
from llamaforge_cli.assets.errors import AssetError
from llamaforge_cli.assets.gguf_vocab import read_vocab_cases

__all__ = [
    "AssetError",
    "asset_dir",
    "asset_names",
    "cache_root",
    "ensure_asset",
    "get_spec",
    "read_vocab_cases",
    "verify_asset",
]
