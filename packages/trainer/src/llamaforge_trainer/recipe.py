"""Recipe files and ``--set`` overrides: read a TOML, YAML or JSON recipe into a mapping, set
dotted keys in it as if written in the file, and validate it into a :class:`TrainConfig`.

Command-line overrides use dotted keys: ``--set stages.1.lr=5e-5 --set seed=3`` (a stage by its
index or ``name``: ``--set stages.full.lr=5e-5``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from llamaforge_trainer.config import TrainConfig
from llamaforge_trainer.errors import TrainError


def _parse_value(text: str) -> Any:
    """A ``--set`` value: JSON (``80``, ``2e-4``, ``true``, ``[1, 2]``, ``{"zh": 200}``), else a
    TOML value (``{ zh = 200 }``, ``['a', 'b']``), else the text itself as a string."""
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    try:
        return _toml().loads(f"v = {text}")["v"]
    except Exception:  # noqa: BLE001 - not a TOML value either: a string
        return text


def apply_override(data: dict, assignment: str) -> None:
    """Set ``KEY=VALUE`` in a recipe's raw mapping ``data``, in place, as if written in the file.

    ``KEY`` is a dotted path; a list entry is named by its index or by its ``name``
    (``stages.full.lr`` or ``stages.0.lr``). ``VALUE`` is JSON, else a TOML value, else a
    string (``trainable=embeddings``). Keys that do not exist yet are created, so validation
    names an unknown one as it would in the file; a path through a missing list entry or
    through a value is a :class:`TrainError`."""
    key, sep, raw = assignment.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise TrainError(f"--set {assignment}: expected KEY=VALUE (e.g. stages.0.lr=5e-5)")
    node: Any = data
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the recipe"
        last = depth == len(parts) - 1
        if isinstance(node, list):
            index = _entry(node, part)
            if index is None:
                names = [str(e["name"]) for e in node if isinstance(e, dict) and "name" in e]
                known = f"0–{len(node) - 1}" if node else "it is empty"
                known += f" or {', '.join(names)}" if names else ""
                raise TrainError(f"--set {assignment}: {where} has no entry {part!r} ({known})")
            if last:
                node[index] = _parse_value(raw)
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = _parse_value(raw)
            else:
                node = node.setdefault(part, {})
        else:
            raise TrainError(f"--set {assignment}: {where} is a value, not a table")


def _entry(items: list, part: str) -> int | None:
    """The index ``part`` names in ``items``: a number, or an entry's ``name``."""
    if part.isdigit():
        return int(part) if int(part) < len(items) else None
    for i, entry in enumerate(items):
        if isinstance(entry, dict) and entry.get("name") == part:
            return i
    return None


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    return tomllib


def build_config(data: Any, where: str = "config") -> TrainConfig:
    """Validate a recipe mapping; every problem is named by its field path in one TrainError."""
    if not isinstance(data, dict):
        raise TrainError(f"{where}: the config must be a table / mapping")
    try:
        return TrainConfig(**data)
    except TrainError as exc:
        raise TrainError(f"{where}: {exc}") from None


def read_recipe(path: str | Path) -> dict:
    """The mapping in a TOML, YAML or JSON recipe file (not yet validated)."""
    path = Path(path)
    if not path.is_file():
        raise TrainError(f"{path}: no such config file")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        if path.suffix == ".json":
            return json.loads(text)
        return _toml().loads(text)
    except Exception as exc:  # noqa: BLE001 - toml / yaml / json parse errors
        raise TrainError(f"{path}: cannot parse ({exc})") from None


def load_config(path: str | Path, overrides: list[str] = ()) -> TrainConfig:
    """Read a TOML, YAML or JSON recipe, apply ``--set`` overrides, validate."""
    data = read_recipe(path)
    if not isinstance(data, dict):
        raise TrainError(f"{path}: the config must be a table / mapping")
    for assignment in overrides:
        apply_override(data, assignment)
    return build_config(data, str(path))
