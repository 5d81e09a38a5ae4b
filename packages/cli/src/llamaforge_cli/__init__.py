"""llamaforge umbrella CLI: component discovery, `doctor` and the real-asset cache."""

from llamaforge_cli.assets import AssetError, asset_names, ensure_asset
from llamaforge_cli.components import COMPONENTS, Component, installed_commands

__version__ = "0.1.0"

__all__ = [
    "COMPONENTS",
    "AssetError",
    "Component",
    "__version__",
    "asset_names",
    "ensure_asset",
    "installed_commands",
]
